"""The v3 family of in-silico retinas: one circuit drawn per seed, for benchmarking.

A v2 retina (:mod:`retcodec.insilico.circuit`) is one fixed circuit; the methods of
retcodec were chosen on it, so it cannot tell whether a choice transfers. The v3
family draws a new circuit from every seed, varying what real retinas vary
(ranges in :class:`FamilyRanges`, documented in ``docs/benchmark.md``):

* **Interneuron types** (the same seven named types as v2, their properties drawn):
  bipolar centre size, kinetics (peak time, biphasic index) per ON/OFF x
  sustained/transient pathway; wide-field and narrow-field amacrine pooling
  radius and kinetics.
* **Ganglion types** (3-8 per retina): each type is an excitatory pattern
  (ON, OFF, ON-OFF with a drawn balance, sustained or transient, or a dominant
  polarity with a weak opposite input) combined with an inhibition (none,
  weak wide-field, strong wide-field = object-motion sensitive, or crossover
  from a narrow-field amacrine) of drawn strength, with its own membrane time
  constant and pooling radius. With probability ``p_sibling`` a new type copies an
  existing type's excitation and differs from it only by its inhibition.
  No two types share both their excitatory pattern and their inhibition.
* **Cells** (2-6 per type, each jittered in gain, size, position, kinetics and
  weights as in v2), mean rate (the Poisson noise level), recording noise of the
  interneurons, number of test repeats, recording length.

Everything is deterministic under the seed: :func:`draw_retina` returns the circuit
configuration and the simulation plan; :func:`simulate_family_retina` writes the
published layouts (recording files with the truth group, interneuron files) exactly
like v2's :func:`~retcodec.insilico.circuit.simulate`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from retcodec.errors import ConfigurationError
from retcodec.insilico import circuit as v2
from retcodec.insilico.circuit import (BIPOLAR_TYPES, CircuitConfig, InSilicoCircuit, SimulationPlan, simulate)

__all__ = ["FAMILY_VERSION", "FamilyRanges", "check_ranges", "FamilyConfig", "RetinaDraw", "draw_retina", "simulate_family_retina",
           "EXCITATION_PATTERNS", "INHIBITIONS", "describe", "replace_ranges", "circuit_from_json"]

#: circuit version written to the files of the family
FAMILY_VERSION = 3

#: excitatory patterns a ganglion type can take (names used in type labels)
EXCITATION_PATTERNS = ("on_transient", "off_transient", "on_sustained", "off_sustained",
                       "on_off_transient", "on_off_sustained", "on_mixed", "off_mixed")
#: inhibitions a ganglion type can take
INHIBITIONS = ("none", "widefield_weak", "widefield_strong", "crossover")


@dataclass(frozen=True)
class FamilyRanges:
    """The ranges every v3 retina is drawn from (uniform unless stated; integers inclusive)."""

    n_types: tuple[int, int] = (3, 8)
    cells_per_type: tuple[int, int] = (2, 6)
    p_sibling: float = 0.35                         # a type that differs from another only by inhibition
    mean_rate: tuple[float, float] = (6.0, 20.0)     # Hz (Poisson noise: lower is noisier)
    jitter: tuple[float, float] = (0.08, 0.2)       # log-normal sd of per-cell parameters
    weight_jitter: tuple[float, float] = (0.05, 0.15)
    rf_sigma: tuple[float, float] = (1.8, 3.5)      # px, type value of the ganglion pooling radius
    tau_transient: tuple[float, float] = (0.006, 0.02)   # s
    tau_sustained: tuple[float, float] = (0.02, 0.05)    # s
    bipolar_center_sigma: tuple[float, float] = (0.8, 1.6)   # px
    transient_peak: tuple[float, float] = (0.03, 0.06)       # s
    sustained_peak: tuple[float, float] = (0.06, 0.1)        # s
    transient_biphasic: tuple[float, float] = (0.6, 1.0)
    sustained_biphasic: tuple[float, float] = (0.0, 0.3)
    widefield_sigma: tuple[float, float] = (7.0, 14.0)      # px
    narrow_sigma: tuple[float, float] = (1.5, 3.5)          # px
    weak_inhibition: tuple[float, float] = (0.1, 0.4)
    strong_inhibition: tuple[float, float] = (0.8, 1.5)
    crossover_inhibition: tuple[float, float] = (0.6, 1.6)
    opposite_weight: tuple[float, float] = (0.2, 0.45)      # the weak opposite input of a mixed type
    on_off_balance: tuple[float, float] = (0.5, 1.0)        # weaker / stronger polarity of an ON-OFF type
    train_seconds: tuple[float, float] = (240.0, 420.0)     # natural-scene train split
    test_seconds: tuple[float, float] = (45.0, 60.0)
    n_repeats: tuple[int, int] = (5, 12)
    whitenoise_train_seconds: float = 120.0     # for the spike-triggered average that places the readout
    vm_noise: tuple[float, float] = (0.1, 0.4)  # interneuron recording noise (fraction of the Vm sd)
    interneurons_per_type: tuple[int, int] = (2, 3)
    interneuron_seconds: float = 120.0          # boxes stimulus of the interneuron recordings
    calibration_seconds: float = 60.0           # movie each cell's operating point adapts to


@dataclass(frozen=True)
class FamilyConfig(CircuitConfig):
    """A v3 circuit: a :class:`CircuitConfig` with per-type cell counts and pooling radii and
    the labels of how each type was drawn (``type_draws``: type -> excitation, inhibition)."""

    version: ClassVar[int] = FAMILY_VERSION
    ganglion_rf_sigma_by_type: dict = field(default_factory=dict)
    type_draws: dict = field(default_factory=dict)

    def rf_sigma_of(self, gtype: str) -> float:
        return float(self.ganglion_rf_sigma_by_type.get(gtype, self.ganglion_rf_sigma))

    @classmethod
    def from_json(cls, text: str) -> "FamilyConfig":
        d = json.loads(text)
        if d.get("version") != FAMILY_VERSION:
            raise ConfigurationError(f"not a v{FAMILY_VERSION} circuit (version {d.get('version')!r})")
        return super().from_json(text)          # type: ignore[return-value]


@dataclass(frozen=True)
class RetinaDraw:
    """One drawn retina: its circuit, its simulation plan and a flat summary of its parameters."""

    seed: int
    config: FamilyConfig
    plan: SimulationPlan
    parameters: dict


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


#: ranges that count things (at least 1 of each); every other range is a positive quantity or a fraction
_COUNT_RANGES = ("n_types", "cells_per_type", "n_repeats", "interneurons_per_type")


#: the family ranges that are probabilities
_PROBABILITIES = ("p_sibling",)


def check_ranges(ranges: FamilyRanges) -> FamilyRanges:
    """``ranges`` if every range is ``(low, high)`` with ``low <= high``, finite, non-negative, and
    counts are integers >= 1; else :class:`ConfigurationError` naming the field."""
    if not isinstance(ranges, FamilyRanges):
        raise ConfigurationError(f"ranges must be a retcodec.insilico.family.FamilyRanges (see replace_ranges), "
                                 f"got {type(ranges).__name__}")
    for f in dataclasses.fields(ranges):
        value = getattr(ranges, f.name)
        pair = value if isinstance(value, (tuple, list)) else (value, value)
        ok = len(pair) == 2 and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                    and np.isfinite(v) and v >= 0 for v in pair) and pair[0] <= pair[1]
        if ok and f.name in _COUNT_RANGES:
            ok = all(float(v).is_integer() and v >= 1 for v in pair)
        if ok and f.name in _PROBABILITIES:
            ok = all(v <= 1 for v in pair)
        if not ok:
            kind = ("integers >= 1" if f.name in _COUNT_RANGES
                    else "probabilities in [0, 1]" if f.name in _PROBABILITIES else "finite numbers >= 0")
            raise ConfigurationError(f"family range {f.name}={value!r} must be (low, high) {kind} with "
                                     f"low <= high")
    return ranges


def _integer(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _excitation(pattern: str, rng: np.random.Generator, r: FamilyRanges) -> dict[str, float]:
    """Signed excitatory weights of a pattern (bipolar type -> weight)."""
    if pattern in ("on_transient", "off_transient", "on_sustained", "off_sustained"):
        return {f"bipolar_{pattern}": 1.0}
    if pattern.startswith("on_off_"):
        kinetics = pattern.rsplit("_", 1)[1]
        weaker = _uniform(rng, r.on_off_balance)
        strong_on = rng.random() < 0.5
        return {f"bipolar_on_{kinetics}": 0.8 if strong_on else 0.8 * weaker,
                f"bipolar_off_{kinetics}": 0.8 * weaker if strong_on else 0.8}
    polarity = pattern.split("_")[0]                     # on_mixed / off_mixed: sustained + weak opposite transient
    opposite = "off" if polarity == "on" else "on"
    return {f"bipolar_{polarity}_sustained": 1.0, f"bipolar_{opposite}_transient": _uniform(rng, r.opposite_weight)}


def _inhibition(kind: str, pattern: str, rng: np.random.Generator, r: FamilyRanges) -> dict[str, float]:
    """Signed inhibitory weights (amacrine type -> negative weight)."""
    if kind == "none":
        return {}
    if kind == "widefield_weak":
        return {"amacrine_widefield": -_uniform(rng, r.weak_inhibition)}
    if kind == "widefield_strong":
        return {"amacrine_widefield": -_uniform(rng, r.strong_inhibition)}
    # crossover: the narrow-field amacrine of the opposite polarity (ON-OFF types: either)
    polarity = pattern.split("_")[0]
    source = {"on": "amacrine_off_narrow", "off": "amacrine_on_narrow"}.get(polarity)
    if pattern.startswith("on_off_"):
        source = "amacrine_on_narrow" if rng.random() < 0.5 else "amacrine_off_narrow"
    return {source: -_uniform(rng, r.crossover_inhibition)}


def _draw_types(rng: np.random.Generator, r: FamilyRanges, n_types: int) -> list[tuple[str, str]]:
    """``n_types`` distinct (excitation pattern, inhibition) pairs, some siblings that differ only
    by their inhibition."""
    chosen: list[tuple[str, str]] = []
    guard = 0
    while len(chosen) < n_types:
        guard += 1
        if guard > 10_000:
            raise ConfigurationError("could not draw distinct ganglion types; widen the ranges")
        if chosen and rng.random() < r.p_sibling:
            pattern = chosen[int(rng.integers(len(chosen)))][0]
        else:
            pattern = EXCITATION_PATTERNS[int(rng.integers(len(EXCITATION_PATTERNS)))]
        inhibition = INHIBITIONS[int(rng.integers(len(INHIBITIONS)))]
        if (pattern, inhibition) not in chosen and not _too_close(pattern, inhibition, chosen):
            chosen.append((pattern, inhibition))
    return chosen


def _too_close(pattern: str, inhibition: str, chosen: list[tuple[str, str]]) -> bool:
    """Siblings must differ by more than a weak wide-field inhibition (no inhibition and weak
    wide-field inhibition are one class: their difference is within the cells' jitter)."""
    weak = {"none", "widefield_weak"}
    return inhibition in weak and any(p == pattern and i in weak for p, i in chosen)


def _type_name(i: int, pattern: str, inhibition: str) -> str:
    suffix = "" if inhibition == "none" else f"+{inhibition}"
    return f"g{i}_{pattern}{suffix}"


def draw_retina(seed: int, ranges: FamilyRanges | None = None) -> RetinaDraw:
    """Draw the v3 retina of ``seed``: circuit, simulation plan and a parameter summary."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigurationError(f"a retina seed must be a non-negative integer, got {seed!r}")
    r = check_ranges(FamilyRanges() if ranges is None else ranges)
    rng = np.random.default_rng([int(seed), 3003])
    n_types = _integer(rng, r.n_types)
    pairs = _draw_types(rng, r, n_types)
    names, wiring, tau, rf, counts, draws = [], {}, {}, {}, {}, {}
    for i, (pattern, inhibition) in enumerate(pairs):
        name = _type_name(i, pattern, inhibition)
        names.append(name)
        wiring[name] = {**_excitation(pattern, rng, r), **_inhibition(inhibition, pattern, rng, r)}
        sustained = "sustained" in pattern or "mixed" in pattern
        tau[name] = _uniform(rng, r.tau_sustained if sustained else r.tau_transient)
        rf[name] = _uniform(rng, r.rf_sigma)
        counts[name] = _integer(rng, r.cells_per_type)
        draws[name] = {"excitation": pattern, "inhibition": inhibition}
    centre = {b: _uniform(rng, r.bipolar_center_sigma) for b in BIPOLAR_TYPES}
    peak = {b: _uniform(rng, r.transient_peak if "transient" in b else r.sustained_peak) for b in BIPOLAR_TYPES}
    biphasic = {b: _uniform(rng, r.transient_biphasic if "transient" in b else r.sustained_biphasic)
                for b in BIPOLAR_TYPES}
    narrow = _uniform(rng, r.narrow_sigma)
    config = FamilyConfig(
        random_state=int(seed), cells_per_type=counts, ganglion_types=tuple(names), wiring=wiring,
        jitter=_uniform(rng, r.jitter), weight_jitter=_uniform(rng, r.weight_jitter),
        bipolar_center_sigma=centre, bipolar_peak=peak, bipolar_biphasic=biphasic,
        amacrine_sigma={"amacrine_widefield": _uniform(rng, r.widefield_sigma),
                        "amacrine_on_narrow": narrow, "amacrine_off_narrow": narrow},
        ganglion_tau=tau, ganglion_rf_sigma_by_type=rf, mean_rate=_uniform(rng, r.mean_rate),
        type_draws=draws, calibration_seconds=r.calibration_seconds)
    per_type = _integer(rng, r.interneurons_per_type)
    plan = SimulationPlan(naturalscene_train=round(_uniform(rng, r.train_seconds)),
                          naturalscene_test=round(_uniform(rng, r.test_seconds)),
                          whitenoise_train=r.whitenoise_train_seconds, whitenoise_test=10.0,
                          n_repeats=_integer(rng, r.n_repeats), bipolars_per_type=per_type,
                          amacrines_per_type=per_type, vm_noise=_uniform(rng, r.vm_noise),
                          interneuron_seconds=r.interneuron_seconds)
    parameters = {"seed": int(seed), "n_types": n_types, "n_cells": int(sum(counts.values())),
                  "n_sibling_types": n_types - len({p for p, _ in pairs}),
                  "n_object_motion_types": sum(i == "widefield_strong" for _, i in pairs),
                  "mean_rate": config.mean_rate, "jitter": config.jitter,
                  "train_seconds": plan.naturalscene_train, "test_seconds": plan.naturalscene_test,
                  "n_repeats": plan.n_repeats, "vm_noise": plan.vm_noise}
    return RetinaDraw(int(seed), config, plan, parameters)


def simulate_family_retina(out_root: str | Path, seed: int, ranges: FamilyRanges | None = None,
                           progress: bool = False) -> dict[str, Path]:
    """Draw the v3 retina of ``seed`` and write it in the published layouts under ``out_root``
    (``insilico/{naturalscene,whitenoise}.h5`` with the truth group, ``interneurons/*.h5``)."""
    draw = draw_retina(seed, ranges)
    return simulate(out_root, random_state=draw.seed, plan=draw.plan, config=draw.config, progress=progress)


def circuit_from_json(text: str, calibrate: bool = False):
    """The circuit a file's ``truth@circuit`` JSON describes, of any version: an
    :class:`~retcodec.insilico.circuit.InSilicoCircuit` for versions 3 and 2, a v1
    :class:`~retcodec.insilico.retina.InSilicoRetina` otherwise. Calibration is skipped unless asked."""
    if json.loads(text).get("version") == FAMILY_VERSION:
        cfg = FamilyConfig.from_json(text)
        return InSilicoCircuit(cfg.random_state, cfg, calibrate=calibrate)
    return v2.circuit_from_json(text, calibrate=calibrate)


def describe(draw: RetinaDraw) -> str:
    """One line per ganglion type: name, cells, wiring."""
    lines = []
    for name in draw.config.ganglion_types:
        w = ", ".join(f"{k.replace('bipolar_', '').replace('amacrine_', 'am_')} {v:+.2f}"
                      for k, v in draw.config.wiring[name].items())
        lines.append(f"{name}: {draw.config.count_of(name)} cells; {w}")
    return "\n".join(lines)


def replace_ranges(**changes: object) -> FamilyRanges:
    """:class:`FamilyRanges` with some ranges changed (e.g. a smaller family for tests)."""
    return dataclasses.replace(FamilyRanges(), **changes)

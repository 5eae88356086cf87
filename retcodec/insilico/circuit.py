"""The v2 in-silico retina: six ganglion types, jittered cells, and silenceable interneuron types.

The circuit (every number in :class:`CircuitConfig`, deterministic under ``random_state``):

* **Stimuli** (50 x 50 px, 100 Hz, uint8; the circuit sees contrast ``s / 127.5 - 1``):
  binary white noise (as in v1) and natural scenes *with object motion*
  (:func:`object_motion_scenes`): a natural-image background that either jitters
  (fixational drift) or drifts globally, and, in most segments, a textured disc cut
  from another photograph that moves on its own trajectory over the cells.
* **Bipolar types** (4, one subunit per pixel): ON/OFF x transient/sustained, a
  difference-of-Gaussians spatial filter, a causal temporal filter
  (biphasic = transient, near-monophasic = sustained) and a rectifying, saturating
  synapse. The pre-synaptic potential is what an electrode records.
* **Amacrine types** (3): a wide-field amacrine pooling the transient ON and OFF
  bipolar outputs over a wide Gaussian with a fast low-pass (it carries global
  motion), and two narrow-field amacrines pooling the sustained ON (or OFF)
  bipolars (crossover inhibition).
* **Ganglion types** (6): ON transient, OFF transient, ON sustained (with a weak
  OFF-transient input: ON and OFF mixed 1 : 0.35), OFF sustained, ON-OFF
  transient (ON and OFF 1 : 1) and object-motion-sensitive (the same excitation as
  ON-OFF transient but strongly inhibited by the wide-field amacrine, so global
  drift cancels and local object motion does not). Each cell pools its inputs
  with a Gaussian around its centre, low-pass filters the signed sum
  (excitation - inhibition) with its own time constant, standardises it and
  passes it through a softplus; its gain is calibrated so that its mean
  natural-scene rate is its (jittered) target. Spikes are Poisson in 10 ms bins.
* **Jitter**: every cell draws its pooling radius, time constant, threshold, target
  rate and synaptic weights around its type's values (log-normal, ``jitter``).
* **Silencing**: :meth:`InSilicoCircuit.silence` returns the circuit with whole
  interneuron types transmitting nothing (their synaptic output is zero for every
  target: ganglion cells and amacrines alike), calibration kept, so rates can be
  re-simulated; :meth:`InSilicoCircuit.silencing_effects` gives the true
  fractional change of each cell's mean rate.

All temporal filtering is FIR: bipolar (``bipolar_taps``) then amacrine
(``amacrine_taps``) then ganglion (``ganglion_taps``) spans at most 40 frames, the
CNN's window.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.insilico.retina import (DT, SIZE, boxes, grey_photographs, pad_to, smooth_rate, temporal_filter, to_contrast,
                     white_noise)

__all__ = ["VERSION", "BIPOLAR_TYPES", "AMACRINE_TYPES", "INTERNEURON_TYPES", "GANGLION_TYPES",
           "DEFAULT_WIRING", "CircuitConfig", "InSilicoCircuit", "object_motion_scenes",
           "make_stimulus", "SimulationPlan", "simulate", "simulate_split", "simulate_interneurons",
           "circuit_from_json", "interneuron_maps", "rates_of", "fir", "blur", "gaussian_matrix", "exponential_filter",
           "unit_area_lowpass", "to_contrast", "white_noise", "boxes", "pad_to"]

#: circuit version written to the files (v1 is :mod:`retcodec.insilico.retina`)
VERSION = 2
BIPOLAR_TYPES = ("bipolar_on_transient", "bipolar_on_sustained", "bipolar_off_transient",
                 "bipolar_off_sustained")
AMACRINE_TYPES = ("amacrine_widefield", "amacrine_on_narrow", "amacrine_off_narrow")
INTERNEURON_TYPES = BIPOLAR_TYPES + AMACRINE_TYPES
GANGLION_TYPES = ("on_transient", "off_transient", "on_sustained", "off_sustained",
                  "on_off_transient", "object_motion")
#: signed synaptic weight of each interneuron type onto each ganglion type (+ excitation, - inhibition)
DEFAULT_WIRING: dict[str, dict[str, float]] = {
    "on_transient": {"bipolar_on_transient": 1.0, "amacrine_widefield": -0.3},
    "off_transient": {"bipolar_off_transient": 1.0, "amacrine_widefield": -0.3},
    "on_sustained": {"bipolar_on_sustained": 1.0, "bipolar_off_transient": 0.35,
                     "amacrine_off_narrow": -1.0},
    "off_sustained": {"bipolar_off_sustained": 1.0, "amacrine_on_narrow": -1.5},
    "on_off_transient": {"bipolar_on_transient": 0.7, "bipolar_off_transient": 0.7,
                         "amacrine_widefield": -0.15},
    "object_motion": {"bipolar_on_transient": 0.7, "bipolar_off_transient": 0.7,
                      "amacrine_widefield": -1.2},
}
#: which bipolar types each amacrine type pools
AMACRINE_INPUTS: dict[str, tuple[str, ...]] = {
    "amacrine_widefield": ("bipolar_on_transient", "bipolar_off_transient"),
    "amacrine_on_narrow": ("bipolar_on_sustained",),
    "amacrine_off_narrow": ("bipolar_off_sustained",),
}


@dataclass(frozen=True)
class CircuitConfig:
    """Every number that defines a v2 in-silico retina (stored with the files as JSON).

    ``cells_per_type`` is one count for every type, or a ``{type: count}`` mapping
    (the v3 family, :mod:`retcodec.insilico.family`, draws one per type).
    """

    #: circuit version written to the files (subclasses of other versions override it)
    version: ClassVar[int] = VERSION
    random_state: int = 0
    cells_per_type: int | dict = 4
    ganglion_types: tuple[str, ...] = GANGLION_TYPES
    wiring: dict = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_WIRING.items()})
    center_range: tuple[float, float] = (18.0, 33.0)      # px, both axes (the readout's unclipped range)
    min_cell_distance: float = 4.0                        # px, within a type
    jitter: float = 0.15                                  # log-normal sd of per-cell parameters
    weight_jitter: float = 0.1                            # log-normal sd of per-cell synaptic weights
    # bipolar types: centre sigma (px), temporal peak (s), biphasic index
    bipolar_center_sigma: dict = field(default_factory=lambda: {
        "bipolar_on_transient": 1.2, "bipolar_on_sustained": 1.0,
        "bipolar_off_transient": 1.2, "bipolar_off_sustained": 1.0})
    bipolar_peak: dict = field(default_factory=lambda: {
        "bipolar_on_transient": 0.05, "bipolar_on_sustained": 0.08,
        "bipolar_off_transient": 0.04, "bipolar_off_sustained": 0.07})
    bipolar_biphasic: dict = field(default_factory=lambda: {
        "bipolar_on_transient": 0.9, "bipolar_on_sustained": 0.15,
        "bipolar_off_transient": 0.9, "bipolar_off_sustained": 0.15})
    bipolar_surround_sigma: float = 4.0
    bipolar_surround_weight: float = 0.6
    bipolar_taps: int = 24
    bipolar_threshold: float = 0.05
    bipolar_saturation: float = 0.5
    # amacrine types: spatial pooling sigma (px) and low-pass peak (s)
    amacrine_sigma: dict = field(default_factory=lambda: {
        "amacrine_widefield": 10.0, "amacrine_on_narrow": 2.5, "amacrine_off_narrow": 2.5})
    amacrine_peak: dict = field(default_factory=lambda: {
        "amacrine_widefield": 0.01, "amacrine_on_narrow": 0.04, "amacrine_off_narrow": 0.04})
    amacrine_taps: int = 9
    # ganglion cells (type values; each cell jitters them)
    ganglion_rf_sigma: float = 2.5                        # px
    ganglion_tau: dict = field(default_factory=lambda: {
        "on_transient": 0.01, "off_transient": 0.01, "on_sustained": 0.03, "off_sustained": 0.03,
        "on_off_transient": 0.01, "object_motion": 0.015})   # s, membrane low-pass
    ganglion_taps: int = 8
    ganglion_threshold: float = 0.5                       # generator std units
    ganglion_sharpness: float = 3.0                       # softplus slope (per std)
    mean_rate: float = 12.0                               # Hz on natural scenes (type value)
    rate_smoothing_sigma: float = 0.01                    # s, for firing_rate_10ms
    calibration_seconds: float = 60.0

    def __post_init__(self) -> None:
        span = self.bipolar_taps + self.amacrine_taps + self.ganglion_taps - 2
        if span > 40:
            raise ConfigurationError(f"the longest pathway spans {span} frames; keep bipolar_taps + "
                                     f"amacrine_taps + ganglion_taps - 2 <= 40 (the CNN's window)")
        unknown = {t for t in self.ganglion_types if t not in self.wiring}
        if unknown:
            raise ConfigurationError(f"ganglion types {sorted(unknown)} have no wiring entry")
        for gtype, inputs in self.wiring.items():
            bad = set(inputs) - set(INTERNEURON_TYPES)
            if bad:
                raise ConfigurationError(f"wiring[{gtype!r}] names unknown interneuron types {sorted(bad)}; "
                                         f"use {INTERNEURON_TYPES}")

    @property
    def history(self) -> int:
        """Frames of stimulus history any rate depends on."""
        return self.bipolar_taps + self.amacrine_taps + self.ganglion_taps - 2

    def count_of(self, gtype: str) -> int:
        """Number of cells of ganglion type ``gtype``."""
        if isinstance(self.cells_per_type, Mapping):
            return int(self.cells_per_type[gtype])
        return int(self.cells_per_type)

    def rf_sigma_of(self, gtype: str) -> float:
        """Type value of the pooling radius (px) of ganglion type ``gtype``."""
        return float(self.ganglion_rf_sigma)

    def to_json(self) -> str:
        return json.dumps({"version": self.version, **dataclasses.asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CircuitConfig":
        d = json.loads(text)
        for key in ("center_range", "ganglion_types"):
            if key in d:
                d[key] = tuple(d[key])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# --------------------------------------------------------------------------- stimuli
def _trajectory(n: int, rng: np.random.Generator, step_sd: float, velocity_sd: float) -> np.ndarray:
    """``(n, 2)`` px offsets: a constant velocity (sd ``velocity_sd`` px/frame) plus a random walk."""
    v = rng.normal(0.0, velocity_sd, size=2)
    steps = v[None, :] + rng.normal(0.0, step_sd, size=(n, 2))
    return np.cumsum(steps, axis=0)


def _object_path(n: int, rng: np.random.Generator, lo: float, hi: float, speed: float) -> np.ndarray:
    """``(n, 2)`` positions of an object moving smoothly inside ``[lo, hi]`` (reflecting walls)."""
    pos = rng.uniform(lo, hi, size=2)
    vel = rng.normal(0.0, speed, size=2)
    out = np.empty((n, 2))
    for k in range(n):
        vel = 0.9 * vel + rng.normal(0.0, 0.35 * speed, size=2)
        pos = pos + vel
        for a in range(2):
            if pos[a] < lo or pos[a] > hi:
                vel[a] = -vel[a]
                pos[a] = np.clip(pos[a], lo, hi)
        out[k] = pos
    return out


def object_motion_scenes(n_frames: int, rng: np.random.Generator, size: int = SIZE,
                         fixation: float = 1.0, p_object: float = 0.7, p_global: float = 0.5,
                         object_radius: tuple[float, float] = (4.0, 8.0), object_speed: float = 0.8,
                         object_contrast: float = 45.0, drift_sigma: float = 0.35, global_speed: float = 0.6,
                         images: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Natural scenes with object motion: ``(T, size, size)`` uint8.

    Segments (exponential, mean ``fixation`` s, at least 0.3 s) each show a new
    image and location. The background moves by fixational drift (random walk,
    ``drift_sigma`` px/frame) or, with probability ``p_global``, also drifts
    globally (velocity sd ``global_speed`` px/frame). With probability
    ``p_object`` a disc (radius drawn from ``object_radius`` px) textured from
    another photograph moves over the centre of the frame on its own smooth
    path (speed ~``object_speed`` px/frame), so the scene holds local motion
    against a still or differently moving background; its texture is rescaled to
    a random mean grey and ``object_contrast`` grey levels sd. Positions are rounded to
    whole pixels.
    """
    images = list(images) if images is not None else grey_photographs()
    out = np.empty((n_frames, size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    t = 0
    while t < n_frames:
        dur = max(int(round(rng.exponential(fixation) / DT)), int(0.3 / DT))
        dur = min(dur, n_frames - t)
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape
        speed = global_speed if rng.random() < p_global else 0.0
        path = _trajectory(dur, rng, drift_sigma, speed)
        path -= path.mean(axis=0)
        span = path.max(axis=0) - path.min(axis=0)
        room = np.array([h - size, w - size], float) - 2.0
        if np.any(span > room):                            # too long a drift for this image: shrink it
            path *= float(np.min(room / np.maximum(span, 1e-9)))
        lo = -path.min(axis=0) + 1.0
        hi = np.array([h - size, w - size], float) - path.max(axis=0) - 1.0
        origin = rng.uniform(lo, np.maximum(hi, lo))
        bg = np.rint(origin[None] + path).astype(int)
        obj = None
        if rng.random() < p_object:
            radius = rng.uniform(*object_radius)
            src = images[int(rng.integers(len(images)))]
            d = int(np.ceil(2 * radius)) + 1
            sy = int(rng.integers(0, src.shape[0] - d))
            sx = int(rng.integers(0, src.shape[1] - d))
            tex = src[sy:sy + d, sx:sx + d]
            tex = rng.uniform(80.0, 175.0) + (tex - tex.mean()) * (object_contrast / (tex.std() + 1e-6))
            centre = np.rint(_object_path(dur, rng, 12.0, 38.0, object_speed)).astype(int)
            obj = (radius, tex, d, centre)
        for k in range(dur):
            frame = img[bg[k, 0]:bg[k, 0] + size, bg[k, 1]:bg[k, 1] + size].copy()
            if obj is not None:
                radius, tex, d, centre = obj
                cy, cx = centre[k]
                top, left = cy - d // 2, cx - d // 2
                ty, tx = yy - top, xx - left
                mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2) & (ty >= 0) & (ty < d) & (tx >= 0) & (tx < d)
                frame[mask] = tex[ty[mask], tx[mask]]
            out[t + k] = np.clip(frame, 0, 255).astype(np.uint8)
        t += dur
    return out


def make_stimulus(kind: str, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``(T, 50, 50)`` v2 stimulus: "naturalscene" (with object motion) or "whitenoise"."""
    if kind == "naturalscene":
        return object_motion_scenes(n_frames, rng)
    if kind == "whitenoise":
        return white_noise(n_frames, rng)
    raise ConfigurationError(f"unknown stimulus kind {kind!r}; use 'naturalscene' or 'whitenoise'")


# --------------------------------------------------------------------------- filters
def gaussian_matrix(sigma: float, size: int = SIZE, truncate: float = 4.0) -> np.ndarray:
    """``(size, size)`` matrix ``G`` with ``G @ x`` a Gaussian blur (sd ``sigma`` px) of a column ``x``,
    zero outside the frame (mean grey), truncated at ``truncate`` sd."""
    i = np.arange(size)
    d = i[:, None] - i[None, :]
    g = np.exp(-0.5 * (d / sigma) ** 2)
    g[np.abs(d) > truncate * sigma + 0.5] = 0.0
    k = np.exp(-0.5 * (np.arange(-int(truncate * sigma + 0.5), int(truncate * sigma + 0.5) + 1) / sigma) ** 2)
    return (g / k.sum()).astype(np.float32)


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every frame of ``(T, H, W)`` (H == W), zero outside the frame."""
    g = gaussian_matrix(sigma, x.shape[-1])
    return np.matmul(np.matmul(g, x), g.T)


def fir(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Causal FIR along axis 0: ``y[t] = sum_k f[k] x[t - k]`` (zero before the start), float32."""
    x = np.asarray(x, np.float32)
    f = np.asarray(f, np.float32)
    n, T = f.size, x.shape[0]
    padded = np.concatenate([np.zeros((n - 1,) + x.shape[1:], np.float32), x]).reshape(T + n - 1, -1)
    lagged = np.lib.stride_tricks.sliding_window_view(padded, n, axis=0)        # (T, P, n): x[t-n+1 .. t]
    return np.einsum("tpn,n->tp", lagged, f[::-1].copy()).reshape(x.shape).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- circuit
def exponential_filter(tau: float, taps: int, dt: float = DT) -> np.ndarray:
    """Unit-area causal exponential low-pass over lags ``0 .. taps-1`` (time constant ``tau`` s)."""
    t = np.arange(taps) * dt
    f = np.exp(-t / max(tau, 1e-6))
    return (f / f.sum()).astype(np.float32)


def unit_area_lowpass(peak: float, taps: int, dt: float = DT) -> np.ndarray:
    """Monophasic gamma-like low-pass (unit area) peaking at ``peak`` s, zero at lag 0."""
    f = temporal_filter(peak, 0.0, taps, dt).astype(np.float64)
    return (f / f.sum()).astype(np.float32)


class InSilicoCircuit:
    """The v2 ground-truth circuit, fully determined by its :class:`CircuitConfig`.

    Attributes: ``config``, ``cell_types`` (n,) str, ``centers`` (n, 2) px (row, col),
    ``weights`` (n, k) signed synaptic weights over ``INTERNEURON_TYPES``,
    ``rf_sigma``, ``tau``, ``threshold``, ``target_rate`` (n,), the calibration
    ``gen_mean``, ``gen_std``, ``gain`` (n,) for the stimulus ensemble ``adaptation``
    (each cell's operating point adapts to the ensemble, as retinal contrast
    adaptation does; the synaptic circuit is the same), and ``silenced`` (the interneuron
    types that transmit nothing, empty for the intact circuit).
    """

    def __init__(self, random_state: int = 0, config: CircuitConfig | None = None,
                 calibrate: bool = True, adaptation: str = "naturalscene") -> None:
        cfg = config or CircuitConfig(random_state=random_state)
        if config is not None and config.random_state != random_state:
            cfg = dataclasses.replace(config, random_state=random_state)
        self.config = cfg
        self.silenced: tuple[str, ...] = ()
        self.adaptation = adaptation
        rng = np.random.default_rng([cfg.random_state, 21])
        self.cell_types, self.centers = self._place_cells(rng)
        n = self.n_cells
        jit = lambda sd: np.exp(rng.normal(0.0, sd, size=n))      # noqa: E731
        self.rf_sigma = (np.array([cfg.rf_sigma_of(t) for t in self.cell_types]) * jit(cfg.jitter)).astype(np.float32)
        self.tau = (np.array([cfg.ganglion_tau[t] for t in self.cell_types]) * jit(cfg.jitter)).astype(np.float32)
        self.threshold = (cfg.ganglion_threshold + rng.normal(0.0, cfg.jitter, size=n)).astype(np.float32)
        self.target_rate = (cfg.mean_rate * jit(cfg.jitter)).astype(np.float32)
        base = np.array([[cfg.wiring[t].get(k, 0.0) for k in INTERNEURON_TYPES] for t in self.cell_types])
        self.weights = (base * np.exp(rng.normal(0.0, cfg.weight_jitter, size=base.shape))).astype(np.float32)
        self.bipolar_filters = {b: temporal_filter(cfg.bipolar_peak[b], cfg.bipolar_biphasic[b], cfg.bipolar_taps)
                                for b in BIPOLAR_TYPES}
        self.amacrine_filters = {a: unit_area_lowpass(cfg.amacrine_peak[a], cfg.amacrine_taps)
                                 for a in AMACRINE_TYPES}
        self.ganglion_filters = np.stack([exponential_filter(float(t), cfg.ganglion_taps) for t in self.tau])
        self.pool = _pooling_weights(self.centers, self.rf_sigma)          # (n, H*W)
        self.gen_mean = np.zeros(n, np.float32)
        self.gen_std = np.ones(n, np.float32)
        self.gain = np.ones(n, np.float32)
        if calibrate:
            self._calibrate()

    # ---------------------------------------------------------------- layout
    def _place_cells(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        types, centers = [], []
        lo, hi = cfg.center_range
        for gtype in cfg.ganglion_types:
            placed: list[np.ndarray] = []
            while len(placed) < cfg.count_of(gtype):
                c = rng.uniform(lo, hi, size=2)
                if all(np.linalg.norm(c - q) >= cfg.min_cell_distance for q in placed):
                    placed.append(c)
            types += [gtype] * cfg.count_of(gtype)
            centers += placed
        return np.array(types), np.round(np.array(centers), 1).astype(np.float32)

    @property
    def n_cells(self) -> int:
        return len(self.cell_types)

    @property
    def history(self) -> int:
        return self.config.history

    # ---------------------------------------------------------------- silencing
    def silence(self, types: Iterable[str]) -> "InSilicoCircuit":
        """A copy of this circuit (same cells and calibration) in which ``types`` transmit nothing."""
        types = tuple(types)
        bad = [t for t in types if t not in INTERNEURON_TYPES]
        if bad:
            raise ConfigurationError(f"cannot silence unknown interneuron types {bad}; use {INTERNEURON_TYPES}")
        out = object.__new__(InSilicoCircuit)
        out.__dict__.update(self.__dict__)
        out.silenced = tuple(sorted(set(self.silenced) | set(types)))
        return out

    # ---------------------------------------------------------------- pathways
    def bipolar_potentials(self, contrast: np.ndarray) -> dict[str, np.ndarray]:
        """Pre-synaptic potential of a subunit of each bipolar type at every pixel: ``(T, H, W)``."""
        cfg = self.config
        spatial: dict[float, np.ndarray] = {}
        surround = None
        out = {}
        for b in BIPOLAR_TYPES:
            cs = cfg.bipolar_center_sigma[b]
            if cs not in spatial:
                if surround is None:
                    surround = blur(contrast, cfg.bipolar_surround_sigma)
                spatial[cs] = blur(contrast, cs) - cfg.bipolar_surround_weight * surround
            sign = 1.0 if "_on_" in b else -1.0
            out[b] = fir(spatial[cs], sign * self.bipolar_filters[b])
        return out

    def rectify(self, v: np.ndarray) -> np.ndarray:
        """Bipolar synaptic transfer ``s * tanh(max(v - theta, 0) / s)`` (rectifying, saturating)."""
        cfg = self.config
        r = np.maximum(v - cfg.bipolar_threshold, 0.0, dtype=np.float32)
        return (cfg.bipolar_saturation * np.tanh(r / cfg.bipolar_saturation)).astype(np.float32)

    def bipolar_outputs(self, potentials: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Synaptic output of each bipolar type at every pixel; zero for silenced types."""
        return {b: (np.zeros_like(v) if b in self.silenced else self.rectify(v)) for b, v in potentials.items()}

    def amacrine_potentials(self, bipolar_out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Potential of an amacrine of each type centred at every pixel ``(T, H, W)``."""
        cfg = self.config
        out = {}
        for a in AMACRINE_TYPES:
            drive = sum(bipolar_out[b] for b in AMACRINE_INPUTS[a])
            out[a] = fir(blur(drive, cfg.amacrine_sigma[a]), self.amacrine_filters[a])
        return out

    def amacrine_outputs(self, potentials: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Amacrine synaptic output ``max(v, 0)``; zero for silenced types."""
        return {a: (np.zeros_like(v) if a in self.silenced else np.maximum(v, 0.0)) for a, v in potentials.items()}

    def synaptic_inputs(self, contrast: np.ndarray, cache: dict | None = None) -> np.ndarray:
        """Each cell's pooled input from each interneuron type, ``(k, T, n)`` (unweighted; zero
        where the cell has no synapse from the type or the type is silenced).

        ``cache`` (a dict, one per movie) keeps the bipolar potentials, their rectified
        outputs and the amacrine potentials so that silenced variants of the circuit
        (:func:`rates_of`) recompute only what silencing changes.
        """
        cache = {} if cache is None else cache
        if "bipolar" not in cache:
            cache["bipolar"] = self.bipolar_potentials(contrast)
            cache["rectified"] = {k: self.rectify(v) for k, v in cache["bipolar"].items()}
            cache["zero"] = np.zeros_like(next(iter(cache["bipolar"].values())))
        b = {k: (cache["zero"] if k in self.silenced else v) for k, v in cache["rectified"].items()}
        key = ("amacrine",) + tuple(sorted(set(self.silenced) & set(BIPOLAR_TYPES)))
        if key not in cache:
            cache[key] = self.amacrine_potentials(b)
        src = {**b, **self.amacrine_outputs(cache[key])}
        T = contrast.shape[0]
        out = np.zeros((len(INTERNEURON_TYPES), T, self.n_cells), np.float32)
        for j, k in enumerate(INTERNEURON_TYPES):
            idx = np.flatnonzero(self.weights[:, j])
            if idx.size and k not in self.silenced:
                out[j][:, idx] = src[k].reshape(T, -1) @ self.pool[idx].T
        return out

    def generator(self, contrast: np.ndarray, cache: dict | None = None) -> np.ndarray:
        """Each cell's low-pass filtered input (excitation - inhibition), ``(n, T)``."""
        drive = np.einsum("ktn,nk->tn", self.synaptic_inputs(contrast, cache), self.weights)
        out = np.zeros_like(drive)
        T = drive.shape[0]
        for k in range(self.ganglion_filters.shape[1]):
            out[k:] += self.ganglion_filters[:, k] * drive[:T - k]
        return np.ascontiguousarray(out.T, dtype=np.float32)

    def output(self, g: np.ndarray) -> np.ndarray:
        """Rates (Hz) from generators ``(n, T)``: gain * softplus(k (z - threshold)) / k."""
        k = self.config.ganglion_sharpness
        z = (g - self.gen_mean[:, None]) / self.gen_std[:, None]
        return (self.gain[:, None] * np.logaddexp(0.0, k * (z - self.threshold[:, None])) / k).astype(np.float32)

    def rates(self, contrast: np.ndarray, chunk: int = 4000) -> np.ndarray:
        """Noise-free firing rates ``(n, T)`` in Hz for a contrast movie ``(T, 50, 50)``."""
        return rates_of([self], contrast, chunk)[0]

    def adapted_to(self, kind: str) -> "InSilicoCircuit":
        """A copy whose cells adapted to the stimulus ensemble ``kind`` (recalibrated on it)."""
        out = object.__new__(InSilicoCircuit)
        out.__dict__.update(self.__dict__)
        out.adaptation = kind
        out._calibrate()
        return out

    def _calibrate(self) -> None:
        """Adapt to the ensemble ``self.adaptation``: standardise each cell's generator on a
        ``calibration_seconds`` movie of it and set the gain so the mean rate is the cell's target."""
        seed = [self.config.random_state, 22, ("naturalscene", "whitenoise").index(self.adaptation)] \
            if self.adaptation in ("naturalscene", "whitenoise") else None
        if seed is None:
            raise ConfigurationError(f"unknown adaptation {self.adaptation!r}; use 'naturalscene' or 'whitenoise'")
        rng = np.random.default_rng(seed)
        stim = to_contrast(make_stimulus(self.adaptation, int(self.config.calibration_seconds / DT), rng))
        g = self.generator(stim)[:, self.history:]
        self.gen_mean = g.mean(axis=1).astype(np.float32)
        self.gen_std = (g.std(axis=1) + 1e-6).astype(np.float32)
        self.gain = np.ones(self.n_cells, np.float32)
        self.gain = (self.target_rate / self.output(g).mean(axis=1)).astype(np.float32)

    def silencing_effects(self, contrast: np.ndarray, types: Sequence[str] = INTERNEURON_TYPES,
                          intact: np.ndarray | None = None) -> xr.DataArray:
        """True effect of silencing each interneuron type: ``(interneuron_type, cell)``.

        effect = (mean silenced rate - mean intact rate) / mean intact rate over
        ``contrast[history:]``, noise-free rates, calibration unchanged.
        """
        start = self.history
        silenced = rates_of([self.silence([t]) for t in types], contrast)[:, :, start:].mean(axis=2)
        base = (self.rates(contrast) if intact is None else intact)[:, start:].mean(axis=1)
        eff = (silenced - base) / base
        return xr.DataArray(eff.astype(np.float64), dims=("interneuron_type", "cell"),
                            coords={"interneuron_type": list(types), "cell": np.arange(self.n_cells)},
                            name="effect",
                            attrs={"long_name": "fractional change of the mean rate when the type is silenced"})

    # ---------------------------------------------------------------- recordings
    def interneuron_maps(self, contrast: np.ndarray) -> dict[str, np.ndarray]:
        """Potential of every interneuron type at every pixel, ``{type: (T, H, W)}`` (intact
        circuit inputs, this circuit's silencing applied to what the amacrines receive)."""
        v = self.bipolar_potentials(np.asarray(contrast, np.float32))
        return {**v, **self.amacrine_potentials(self.bipolar_outputs(v))}

    def interneuron_potentials(self, contrast: np.ndarray, kinds: Sequence[str],
                               positions: np.ndarray) -> np.ndarray:
        """Potential ``(n, T)`` of interneurons of types ``kinds`` at ``(row, col)`` pixels."""
        v = self.bipolar_potentials(contrast)
        need_a = any(k in AMACRINE_TYPES for k in kinds)
        a = self.amacrine_potentials(self.bipolar_outputs(v)) if need_a else {}
        out = np.empty((len(kinds), contrast.shape[0]), np.float32)
        for i, (kind, (r, c)) in enumerate(zip(kinds, np.asarray(positions, int))):
            src = v if kind in BIPOLAR_TYPES else a
            if kind not in src:
                raise ConfigurationError(f"unknown interneuron type {kind!r}; use {INTERNEURON_TYPES}")
            out[i] = src[kind][:, r, c]
        return out

    def record(self, contrast: np.ndarray, rng: np.random.Generator, n_repeats: int = 1) -> dict[str, np.ndarray]:
        """Noise-free rate, Poisson spike counts ``(repeat, n, T)`` and 10 ms rate estimates."""
        rate = self.rates(contrast)
        spikes = rng.poisson((rate * DT)[None].repeat(n_repeats, axis=0)).astype(np.uint8)
        return {"true_rate": rate, "spikes": spikes,
                "rate": smooth_rate(spikes, self.config.rate_smoothing_sigma)}

    def truth(self) -> dict:
        """Per-cell truth, the wiring and the circuit (JSON), for a file's ``truth`` group."""
        return {"cell_type": self.cell_types, "center": self.centers, "rf_sigma": self.rf_sigma,
                "time_constant": self.tau, "threshold": self.threshold, "target_rate": self.target_rate,
                "gain": self.gain, "generator_mean": self.gen_mean, "generator_std": self.gen_std,
                "circuit": self.config.to_json(), "adaptation": self.adaptation,
                "wiring": {"weight": self.weights, "interneuron_type": np.array(INTERNEURON_TYPES)}}


def rates_of(circuits: Sequence[InSilicoCircuit], contrast: np.ndarray, chunk: int = 4000) -> np.ndarray:
    """Rates ``(len(circuits), n, T)`` of variants of one circuit (silenced copies) for one movie;
    what silencing does not change (bipolar potentials, amacrine potentials) is computed once."""
    contrast = np.asarray(contrast, np.float32)
    if contrast.ndim != 3 or contrast.shape[1:] != (SIZE, SIZE):
        raise ShapeError(f"contrast must be (T, {SIZE}, {SIZE}), got {contrast.shape}")
    first = circuits[0]
    T = contrast.shape[0]
    out = np.empty((len(circuits), first.n_cells, T), np.float32)
    for s in range(0, T, chunk):
        a = max(0, s - first.history)
        piece = contrast[a:s + chunk]
        cache: dict = {}
        for j, c in enumerate(circuits):
            out[j, :, s:s + chunk] = c.output(c.generator(piece, cache)[:, s - a:])
    return out


def circuit_from_json(text: str, calibrate: bool = False):
    """The circuit a file's ``truth@circuit`` JSON describes: an :class:`InSilicoCircuit` for
    version 2, a v1 :class:`~retcodec.insilico.retina.InSilicoRetina` otherwise (see
    :func:`interneuron_maps` for what both give). Calibration is skipped unless asked."""
    data = json.loads(text)
    if data.get("version") == VERSION:
        cfg = CircuitConfig.from_json(text)
        return InSilicoCircuit(cfg.random_state, cfg, calibrate=calibrate)
    if isinstance(data.get("version"), int) and data["version"] > VERSION:
        raise ConfigurationError(f"a v{data['version']} circuit: read it with "
                                 f"retcodec.insilico.family.circuit_from_json")
    from retcodec.insilico.retina import CircuitParams, InSilicoRetina
    params = CircuitParams.from_json(text)
    return InSilicoRetina(params.seed, params, calibrate=calibrate)


def interneuron_maps(circuit, contrast: np.ndarray) -> dict[str, np.ndarray]:
    """Potential of every interneuron type at every pixel, ``{type: (T, H, W)}``, for a v2
    circuit or a v1 retina (e.g. to label model channels by the true type they resemble)."""
    if isinstance(circuit, InSilicoCircuit):
        return circuit.interneuron_maps(contrast)
    v = circuit.bipolar_potentials(np.asarray(contrast, np.float32))
    return {**v, **circuit.amacrine_potentials({k: circuit.rectify(x) for k, x in v.items()})}


def _pooling_weights(centers: np.ndarray, sigma: np.ndarray, size: int = SIZE) -> np.ndarray:
    """``(n, size*size)`` unit-sum Gaussian weights, one radius per cell."""
    yy, xx = np.mgrid[0:size, 0:size]
    d2 = (yy[None] - centers[:, 0, None, None]) ** 2 + (xx[None] - centers[:, 1, None, None]) ** 2
    w = np.exp(-0.5 * d2 / np.asarray(sigma, float)[:, None, None] ** 2)
    w /= w.sum(axis=(1, 2), keepdims=True)
    return w.reshape(len(centers), -1).astype(np.float32)


# --------------------------------------------------------------------------- files
@dataclass(frozen=True)
class SimulationPlan:
    """Lengths (s) of every simulated split; the defaults are the full-length bundle."""

    naturalscene_train: float = 420.0
    naturalscene_test: float = 60.0
    whitenoise_train: float = 300.0
    whitenoise_test: float = 60.0
    n_repeats: int = 10
    interneuron_seconds: float = 120.0
    bipolars_per_type: int = 3
    amacrines_per_type: int = 3
    vm_noise: float = 0.2                 # recording noise, fraction of each cell's Vm std
    kinds: tuple[str, ...] = ("naturalscene", "whitenoise")


EXPERIMENT = "insilico"


def simulate_split(circuit: InSilicoCircuit, kind: str, seconds: float, rng: np.random.Generator,
                   n_repeats: int = 1, extra_bins: int = 0) -> dict[str, np.ndarray]:
    """One split: ``stimulus`` (T, 50, 50) uint8, ``firing_rate_10ms``, ``binned``, ``true_rate``
    (n, T + extra_bins) and with repeats ``repeats`` (n, n_repeats, T + extra_bins); see v1."""
    n = int(round(seconds / DT))
    stim = make_stimulus(kind, n + extra_bins, rng)
    rec = circuit.record(to_contrast(stim), rng, n_repeats=n_repeats)
    out = {"stimulus": stim[:n], "firing_rate_10ms": rec["rate"].mean(axis=0),
           "binned": rec["spikes"].sum(axis=0).astype(np.uint16), "true_rate": rec["true_rate"]}
    if n_repeats > 1:
        out["repeats"] = rec["rate"].transpose(1, 0, 2)
    return out


def simulate(out_root: str | Path, random_state: int = 0, plan: SimulationPlan | None = None,
             config: CircuitConfig | None = None, progress: bool = False) -> dict[str, Path]:
    """Simulate the v2 retina and write it in the published layouts.

    Writes ``<out_root>/insilico/{naturalscene,whitenoise}.h5`` with a ``truth``
    group (per-cell truth, ``wiring``, and ``silencing`` effects on that file's
    test stimulus) and ``<out_root>/interneurons/{bipolars,amacrines}_insilico.h5``
    (every interneuron type, ``truth/cell_type`` = its type). Deterministic under
    ``random_state``.
    """
    from retcodec.io.recordings import write_recording

    plan = plan or SimulationPlan()
    out_root = Path(out_root)
    base = InSilicoCircuit(random_state, config, calibrate=False)
    paths: dict[str, Path] = {}
    steps = [(k, *{"naturalscene": (plan.naturalscene_train, plan.naturalscene_test, 0),
                   "whitenoise": (plan.whitenoise_train, plan.whitenoise_test, 1)}[k]) for k in plan.kinds]
    bar = _bar(len(steps) + 1, progress)
    for i, (kind, train_s, test_s, extra) in enumerate(steps):
        circuit = base.adapted_to(kind)
        rng = np.random.default_rng([circuit.config.random_state, 100 + ("naturalscene", "whitenoise").index(kind)])
        train = simulate_split(circuit, kind, train_s, rng)
        test = simulate_split(circuit, kind, test_s, rng, n_repeats=plan.n_repeats, extra_bins=extra)
        contrast = to_contrast(test["stimulus"])
        effects = circuit.silencing_effects(contrast, intact=test["true_rate"][:, :contrast.shape[0]])
        for split in (train, test):
            split.pop("true_rate")
        truth = circuit.truth()
        truth["silencing"] = {"effect": effects.values, "interneuron_type": np.array(INTERNEURON_TYPES),
                              "stimulus": f"{kind} test split, frames {circuit.history}.., noise-free rates"}
        attrs = {"experiment": EXPERIMENT, "stim_type": kind, "simulated": 1,
                 "seed": circuit.config.random_state, "circuit_version": circuit.config.version,
                 "description": f"in-silico retina v{circuit.config.version} ({_module_of(circuit)}), "
                                "NOT a recording of a real retina",
                 "binned_test": f"spike counts summed over the {plan.n_repeats} repeats",
                 "repeats_units": "Hz (single-trial 10 ms rate estimates)"}
        paths[kind] = write_recording(out_root / EXPERIMENT / f"{kind}.h5", train=train, test=test,
                                      attrs=attrs, truth=truth)
        bar.update()
    paths.update(simulate_interneurons(base, out_root / "interneurons", plan))
    bar.update()
    bar.close()
    return paths


def simulate_interneurons(circuit: InSilicoCircuit, folder: str | Path, plan: SimulationPlan) -> dict[str, Path]:
    """Bipolar and amacrine "recordings" (every type) to a boxes stimulus, one file per class."""
    from retcodec.io.interneurons import write_interneurons

    rng = np.random.default_rng([circuit.config.random_state, 200])
    raw = boxes(int(round(plan.interneuron_seconds / DT)), rng)
    contrast = pad_to(2.0 * raw.astype(np.float32) - 1.0)        # the published preparation
    out = {}
    for cls, kinds, per in (("bipolars", BIPOLAR_TYPES, plan.bipolars_per_type),
                            ("amacrines", AMACRINE_TYPES, plan.amacrines_per_type)):
        types = np.repeat(np.array(kinds), per)
        pos = rng.integers(16, 34, size=(len(types), 2))
        vm = circuit.interneuron_potentials(contrast, list(types), pos)
        vm = vm + rng.normal(0, plan.vm_noise, vm.shape).astype(np.float32) * vm.std(axis=1, keepdims=True)
        vm = vm - vm.mean(axis=1, keepdims=True)                  # "detrended"
        out[cls] = write_interneurons(
            Path(folder) / f"{cls}_insilico.h5", {"boxes": (raw, vm.astype(np.float32))},
            truth={"cell_type": types, "center": pos.astype(np.float32), "circuit": circuit.config.to_json()},
            attrs={"simulated": 1, "seed": circuit.config.random_state, "circuit_version": circuit.config.version,
                   "description": f"in-silico retina v{circuit.config.version} interneurons ({_module_of(circuit)})"})
    return out


def _module_of(circuit: InSilicoCircuit) -> str:
    """The module that defines the circuit's version (written to the files' descriptions)."""
    return "retcodec.insilico.circuit" if circuit.config.version == VERSION else "retcodec.insilico.family"


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, disable=not enabled, desc="simulate v2")

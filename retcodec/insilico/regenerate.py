"""Regenerate the bundled default from scratch: simulate, fit, evaluate, copy.

``retcodec regenerate`` (or :func:`regenerate`) runs, deterministically under a seed:

1. :func:`retcodec.insilico.circuit.simulate` (the v2 retina; ``version=1`` uses
   :func:`retcodec.insilico.retina.simulate`, the v1 retina) writes the full-length
   in-silico recordings (with their ground truth: types, wiring, silencing effects)
   and interneuron files under ``<work>/data``;
2. :func:`retcodec.fitting.fit_ensemble` fits the published ``VaryModel`` layout to the
   natural-scene train split (an ensemble of ``ENSEMBLE_MEMBERS`` models: seeds
   ``seed + k``, held-out blocks ``-1 - k``) and :func:`retcodec.fitting.fit` to the
   white-noise one (centres from the white-noise STA), writing
   ``<work>/models/insilico_{naturalscene,whitenoise}.pt`` and
   ``insilico_naturalscene_m1.pt``, ...;
3. :func:`retcodec.analysis.evaluation.evaluate` scores each model on its test split
   (``<work>/models/*_evaluation.nc``);
4. with ``bundle=True`` the files are copied into the checkout's ``datasets/``
   and ``models/`` (the full-length files fit the size budget, so no shortening
   is needed; ``bundle_train_seconds`` shortens the train splits if asked).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from retcodec.io.bundled import DEFAULT_EXPERIMENT, DEFAULT_INTERNEURONS

__all__ = ["regenerate", "simulate_version", "check_simulation_outputs", "SIMULATION_FILES", "bundle_files", "bundle_target"]


def regenerate(work: str | Path = "work/regenerate", seed: int = 0, bundle: bool = True,
               repo: str | Path | None = None, bundle_train_seconds: float | None = None,
               progress: bool = True, device: str = "cpu", version: int = 2,
               **fit_options: Any) -> dict[str, Any]:
    """Simulate the in-silico retina (circuit ``version`` 2 or 1), fit both models,
    evaluate, and (optionally) bundle.

    Returns a dict of written paths, the evaluation medians and timings (s).
    """
    from retcodec.analysis.evaluation import evaluate, format_evaluation
    from retcodec.defaults import ENSEMBLE_MEMBERS
    from retcodec.fitting import fit_ensemble
    from retcodec.io.recordings import load_recording
    from retcodec.io.storage import write_netcdf_atomic

    work = Path(work)
    if bundle:
        repo = bundle_target(repo)       # checked now, not after half an hour of fitting
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    paths = simulate_version(work / "data", seed, version, progress)
    timings["simulate"] = time.perf_counter() - t0
    summary: dict[str, Any] = {"paths": {k: str(v) for k, v in paths.items()}, "evaluation": {}}
    for kind in ("naturalscene", "whitenoise"):
        t0 = time.perf_counter()
        train = load_recording(paths[kind], split="train")
        test = load_recording(paths[kind], split="test")
        out = work / "models" / f"insilico_{kind}.pt"
        members = ENSEMBLE_MEMBERS if kind == "naturalscene" else 1     # the ensemble of the predictions
        fitted = fit_ensemble(train, members, test=test, out=out, seed=seed, progress=progress, device=device,
                              **fit_options)
        model, history = fitted[0]
        ev = evaluate(model, test, device=device)
        write_netcdf_atomic(ev, out.with_name(f"insilico_{kind}_evaluation.nc"))
        write_netcdf_atomic(history, out.with_name(f"insilico_{kind}_history.nc"))
        timings[f"fit_{kind}"] = time.perf_counter() - t0
        summary["paths"][f"model_{kind}"] = str(out)
        summary["evaluation"][kind] = {k: v for k, v in ev.attrs.items() if k.startswith("median")}
        if progress:
            print(f"\n{kind} model on its test split:\n{format_evaluation(ev)}")
    if bundle:
        summary["bundled"] = bundle_files(work, repo, bundle_train_seconds)
    summary["timings"] = timings
    return summary


#: the files an in-silico simulation writes under its ``out`` folder
SIMULATION_FILES = ("insilico/naturalscene.h5", "insilico/whitenoise.h5",
                    "interneurons/bipolars_insilico.h5", "interneurons/amacrines_insilico.h5")


def check_simulation_outputs(out: str | Path) -> None:
    """Before simulating: refuse when a file the simulation writes exists and retcodec did not write it."""
    from retcodec.errors import OutputPathError
    from retcodec.io.storage import is_retcodec_file

    for name in SIMULATION_FILES:
        path = Path(out) / name
        if path.exists() and not is_retcodec_file(path):
            raise OutputPathError(f"{path} exists and was not written by retcodec; the simulation would replace "
                                  f"it. Move it or simulate into another folder")


def simulate_version(out: str | Path, seed: int = 0, version: int = 2, progress: bool = False) -> dict[str, Path]:
    """Full-length files of in-silico retina ``version`` (2: :mod:`~retcodec.insilico.circuit`,
    1: :mod:`~retcodec.insilico.retina`; 3: the retina ``seed`` of the benchmark family,
    :mod:`~retcodec.insilico.family`) under ``out``, deterministic under ``seed``."""
    check_simulation_outputs(out)
    if version == 3:
        from retcodec.insilico.family import simulate_family_retina
        return simulate_family_retina(out, seed, progress=progress)
    if version == 2:
        from retcodec.insilico.circuit import simulate
        return simulate(out, random_state=seed, progress=progress)
    if version == 1:
        from retcodec.insilico.retina import simulate as simulate_v1
        return simulate_v1(out, seed=seed, progress=progress)
    from retcodec.errors import ConfigurationError
    raise ConfigurationError(f"unknown in-silico retina version {version!r}; use 2 (bundled), 1 or 3 (benchmark family)")


def bundle_target(repo: str | Path | None = None) -> Path:
    """The checkout whose ``datasets/`` and ``models/`` receive the bundle (checked writable).

    Without ``repo`` this is the source checkout retcodec runs from; an installed retcodec
    (a wheel) has none, so bundling is refused before any work with a message saying how
    to proceed.
    """
    from retcodec.errors import ConfigurationError
    from retcodec.io.bundled import source_checkout
    from retcodec.io.storage import check_output_folder

    root = Path(repo).expanduser() if repo else source_checkout()
    if root is None:
        raise ConfigurationError("retcodec runs from an installed package, not a source checkout, so "
                                 "there is no datasets/ and models/ folder to bundle into; run "
                                 "`retcodec regenerate --no-bundle` (the files stay in --work) or from a "
                                 "clone of the repository")
    if not (root / "setup.cfg").is_file():
        raise ConfigurationError(f"{root} is not a retcodec checkout (no setup.cfg); give the repository root")
    for kind in ("datasets", "models"):
        check_output_folder(root / kind, f"bundle folder {root / kind}")
    return root


def bundle_files(work: str | Path, repo: str | Path | None = None,
                 train_seconds: float | None = None) -> list[str]:
    """Copy regenerated files into ``<repo>/datasets`` and ``<repo>/models``."""
    from retcodec.insilico.retina import shorten_recording

    work = Path(work)
    repo = bundle_target(repo)
    written = []
    for kind in ("naturalscene", "whitenoise"):
        src = work / "data" / DEFAULT_EXPERIMENT / f"{kind}.h5"
        dst = repo / "datasets" / DEFAULT_EXPERIMENT / f"{kind}.h5"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if train_seconds:
            shorten_recording(src, dst, train_seconds)
        else:
            shutil.copyfile(src, dst)
        written.append(str(dst))
        model = work / "models" / f"insilico_{kind}.pt"
        (repo / "models").mkdir(exist_ok=True)
        members = sorted(model.parent.glob(f"insilico_{kind}_m[0-9]*.pt"))       # the ensemble's other members
        for f in (model, model.with_name(f"insilico_{kind}_evaluation.nc"), *members):
            shutil.copyfile(f, repo / "models" / f.name)
            written.append(str(repo / "models" / f.name))
    src_int = work / "data" / "interneurons"
    dst_int = repo / "datasets" / DEFAULT_INTERNEURONS
    dst_int.mkdir(parents=True, exist_ok=True)
    for f in sorted(src_int.glob("*.h5")):
        shutil.copyfile(f, dst_int / f.name)
        written.append(str(dst_int / f.name))
    return written

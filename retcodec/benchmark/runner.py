"""Generate, fit, analyse and score the retinas of the benchmark family, resumably.

Each retina lives in ``<out>/retinas/<split>-<seed>/``:

* ``data/`` -- the simulated recordings and interneuron files (published layouts);
* ``model.pt`` and ``fit.nc`` -- the model fitted with the family's recipe and its history;
* ``results/`` -- the ``retcodec run`` results folder (its own stage cache and lock);
* ``scores.nc`` -- :func:`retcodec.benchmark.scores.score_retina` of those results;
* ``steps.json`` -- which steps finished, with the sha256 of every file they wrote and
  their compute time. A step is reused only when its files still have those checksums;
  otherwise it is redone with every later step.

Every retina runs on one thread, so its numbers do not depend on ``--workers``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from retcodec.benchmark.splits import SPLITS, retina_seeds, split_of
from retcodec.errors import ConfigurationError, RetcodecError
from retcodec.io.locking import hold_lock
from retcodec.io.provenance import sha256
from retcodec.io.storage import atomic_path, check_output_folder, write_netcdf_atomic

__all__ = ["BenchmarkConfig", "StepManifest", "STEPS", "SIMULATION_MARKER", "QUICK_RANGES", "QUICK_RUN", "FAMILY_RUN", "run_retina", "benchmark",
           "retina_folder"]

#: the file that marks a retina's data folder as written by the benchmark (others are never deleted)
SIMULATION_MARKER = ".retcodec-simulation"
#: the steps of one retina, in order
STEPS = ("simulate", "fit", "analyse", "score")
#: ``retcodec run`` options of a family retina (IRFs are not scored: one small set)
FAMILY_RUN: dict[str, Any] = {"irf_sets": 1, "irf_times_per_set": 2, "interneuron_directions": True}
#: ``retcodec run`` options of a quick-family retina
QUICK_RUN: dict[str, Any] = {"quick": True, "interneuron_directions": True, "max_windows": 120, "irf_sets": 1, "irf_times_per_set": 2,
                             "interneuron_shifts": 10, "experiment_windows": 60, "typing_windows": 40,
                             "interneuron_windows": 600, "stability_seeds": (0, 1),
                             "mode_options": {"max_epochs": 40, "patience": 10}}
#: the quick family: small retinas, short recordings, for tests and CI. Its scores are rough
#: (models fitted on 30 s): it checks the machinery, not the science.
QUICK_RANGES: dict[str, Any] = {"n_types": (3, 4), "cells_per_type": (2, 3), "train_seconds": (30.0, 30.0),
                                "test_seconds": (10.0, 10.0), "n_repeats": (3, 3),
                                "whitenoise_train_seconds": 20.0, "interneurons_per_type": (1, 1),
                                "interneuron_seconds": 20.0, "calibration_seconds": 20.0}


@dataclass
class BenchmarkConfig:
    """Everything that defines a benchmark run (stored in ``benchmark.nc``)."""

    out: str = "benchmark"
    split: str = "test"
    retinas: int = 12
    seeds: tuple[int, ...] | None = None          # explicit seeds (override split/retinas)
    quick: bool = False
    workers: int = 0
    device: str = "cpu"
    progress: bool = True
    members: int = 1                               # models per retina (an ensemble when > 1)
    run_options: dict = field(default_factory=dict)

    def retina_seeds(self) -> list[int]:
        if self.seeds is not None:
            seeds = [int(s) for s in self.seeds]
            if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
                raise ConfigurationError(f"seeds must be distinct non-negative integers, got {self.seeds!r}")
            return seeds
        return retina_seeds(self.split, self.retinas)

    def recipe_name(self) -> str:
        return "quick" if self.quick else "family"

    def pipeline_options(self) -> dict[str, Any]:
        return {**(QUICK_RUN if self.quick else FAMILY_RUN), **self.run_options}


def retina_folder(out: str | Path, seed: int) -> Path:
    """The folder of retina ``seed`` inside a benchmark folder."""
    return Path(out) / "retinas" / f"{split_of(seed)}-{seed}"


class StepManifest:
    """The ``steps.json`` manifest of one retina: finished steps, their files' sha256, times.

    A manifest of the wrong shape, or one naming files outside the retina's folder, makes
    its steps stale (they are redone), never trusted and never an error.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "steps.json"
        try:
            self.record: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError):
            self.record = {}
        if not isinstance(self.record, dict):
            self.record = {}

    def current(self, step: str, key: str) -> bool:
        entry = self.record.get(step)
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("files"), dict):
            return False
        root = self.folder.resolve()
        for name, digest in entry["files"].items():
            path = (self.folder / str(name)).resolve()
            if root not in path.parents or not path.is_file() or sha256(path) != digest:
                return False
        return True

    def done(self, step: str, key: str, files: Sequence[Path], seconds: float) -> None:
        self.record[step] = {"key": key, "seconds": round(seconds, 1),
                             "files": {str(p.relative_to(self.folder)): sha256(p) for p in files}}
        for later in STEPS[STEPS.index(step) + 1:]:
            self.record.pop(later, None)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.record, indent=1, sort_keys=True))

    def seconds(self) -> dict[str, float]:
        return {s: float(self.record[s]["seconds"]) for s in STEPS if s in self.record}


def _discard_simulation(data: Path) -> None:
    """Delete what a benchmark simulation wrote in ``data`` (its marker, files with retcodec's
    provenance, folders left empty); any other file, e.g. one a user added, is kept."""
    from retcodec.io.storage import is_retcodec_file

    for path in sorted(data.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink():
            continue
        if path.is_file() and (path == data / SIMULATION_MARKER or is_retcodec_file(path)):
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def run_retina(seed: int, out: str | Path, quick: bool = False, device: str = "cpu",
               run_options: dict[str, Any] | None = None, say: Callable[[str], None] | None = None,
               members: int = 1) -> Path:
    """Simulate, fit, analyse and score retina ``seed`` under ``out``; returns its ``scores.nc``.

    ``members`` > 1 fits an ensemble (:func:`retcodec.fitting.fit_ensemble`: ``model.pt``
    and ``model_m1.pt``, ...) whose members the analysis uses for the silencing predictions.
    Finished steps whose files are unchanged are reused (resumable); runs on one thread.
    """
    import torch

    from retcodec.benchmark.scores import score_retina
    from retcodec.fitting import fit_ensemble, member_paths, recipe
    from retcodec.insilico.family import FamilyRanges, draw_retina, replace_ranges, simulate_family_retina
    from retcodec.io.recordings import load_recording
    from retcodec.pipeline.run import run

    say = say or (lambda msg: None)
    folder = retina_folder(out, seed)
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    ranges = replace_ranges(**QUICK_RANGES) if quick else FamilyRanges()
    options = {**(QUICK_RUN if quick else FAMILY_RUN), **(run_options or {})}
    fit_recipe = "quick" if quick else "family"
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ConfigurationError(f"members must be a positive integer, got {members!r}")
    keys = _step_keys(seed, asdict(ranges), asdict(recipe(fit_recipe)), options, members)
    name = f"retina {split_of(seed)}-{seed}"
    with hold_lock(folder / ".retcodec.lock", f"benchmark retina {folder}"):
        steps = StepManifest(folder)
        data, model_path = folder / "data", folder / "model.pt"
        recording = data / "insilico" / "naturalscene.h5"

        def step(label: str, work: Callable[[], list[Path]]) -> None:
            key = keys[label]
            if steps.current(label, key):
                say(f"{name}: {label} skipped (up to date)")
                return
            say(f"{name}: {label} ...")
            t0 = time.perf_counter()
            files = work()
            steps.done(label, key, files, time.perf_counter() - t0)
            say(f"{name}: {label} done in {time.perf_counter() - t0:.0f} s")

        def simulate() -> list[Path]:
            if data.is_symlink() or data.exists():
                if data.is_symlink() or not (data / SIMULATION_MARKER).is_file():
                    raise RetcodecError(f"{data} exists but was not written by retcodec's benchmark (or is a "
                                        f"symbolic link); move it away (nothing was deleted)")
                _discard_simulation(data)     # our own (stale or partial) simulation; a user's files stay
            data.mkdir(parents=True, exist_ok=True)
            (data / SIMULATION_MARKER).write_text(f"retcodec benchmark simulation of retina {seed}\n")
            simulate_family_retina(data, seed, ranges)
            return _files_under(data)

        def fit_model() -> list[Path]:
            train = load_recording(recording, split="train")
            test = load_recording(recording, split="test")
            config = recipe(fit_recipe, seed=seed, threads=1)
            fitted = fit_ensemble(train, members, test=test, config=config, out=model_path, device=device)
            write_netcdf_atomic(fitted[0][1], folder / "fit.nc")
            return [*member_paths(model_path, members), folder / "fit.nc"]

        def analyse() -> list[Path]:
            run(model_path, recording, out=str(folder / "results"), interneurons=(str(data / "interneurons"),),
                device=device, progress=False, random_state=0,
                ensemble=tuple(str(p) for p in member_paths(model_path, members)[1:]), **options)
            return [folder / "results" / f for f in ("cell_types.nc", "experiments.nc", "interneurons.nc",
                                                      "modes.nc", "statistics.nc")]

        def score() -> list[Path]:
            ds = score_retina(folder / "results", recording)
            ds.attrs.update(seed=seed, split=split_of(seed), quick=int(quick),
                            parameters=json.dumps(draw_retina(seed, ranges).parameters, sort_keys=True))
            return [write_netcdf_atomic(ds, folder / "scores.nc")]

        step("simulate", simulate)
        step("fit", fit_model)
        step("analyse", analyse)
        step("score", score)
        (folder / "timings.json").write_text(json.dumps(steps.seconds(), indent=1))
    return folder / "scores.nc"


def _step_keys(seed: int, ranges: dict, fit_config: dict, run_options: dict, members: int = 1) -> dict[str, str]:
    """What each step's result depends on (its own inputs and every earlier step's)."""
    parts = {"simulate": {"seed": seed, "ranges": ranges}, "fit": {"recipe": fit_config},
             "analyse": {"run": run_options}, "score": {}}
    if members > 1:                          # one model (the default) keeps the keys of earlier releases
        parts["fit"]["members"] = members
    keys, acc = {}, {}
    for name in STEPS:
        acc.update(parts[name])
        keys[name] = json.dumps(acc, sort_keys=True, default=str)
    return keys


def _run_one(seed: int, out: str, quick: bool, device: str, run_options: dict[str, Any], members: int = 1) -> str:
    """A dask task: one retina, quietly; returns the path of its scores."""
    return str(run_retina(seed, out, quick=quick, device=device, run_options=run_options, members=members))


def benchmark(out: str | Path = "benchmark", split: str = "test", retinas: int = 12,
              seeds: Sequence[int] | None = None, quick: bool = False, workers: int = 0,
              device: str = "cpu", progress: bool = True, members: int = 1, **run_options: Any) -> dict[str, Any]:
    """Run the benchmark: every retina (resumably), then ``benchmark.nc`` and the summary page.

    ``split`` ('tuning' or 'test') and ``retinas`` pick the first seeds of that split;
    ``seeds`` names them instead. ``members`` > 1 fits an ensemble of that many models per
    retina for the silencing predictions. ``workers`` > 0 spreads the retinas over a dask
    ``LocalCluster`` of that many single-threaded processes. Returns the written paths.
    """
    from retcodec.benchmark.summary import summarize
    from retcodec.devices import resolve_device
    from retcodec.io.validation import as_flag
    from retcodec.pipeline.config import make_config

    if seeds is not None:
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)) or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
            raise ConfigurationError(f"seeds must be a list of non-negative integers, e.g. [0, 1], got {seeds!r:.60}")
    quick, progress = as_flag(quick, "quick"), as_flag(progress, "progress")
    device = str(resolve_device(device))
    cfg = BenchmarkConfig(out=str(out), split=split, retinas=retinas,
                          seeds=tuple(seeds) if seeds is not None else None, quick=quick, workers=workers,
                          device=device, progress=progress, members=members, run_options=dict(run_options))
    make_config(None, None, **cfg.pipeline_options())      # unknown or bad run options: refused before any work
    if cfg.split not in SPLITS and cfg.seeds is None:
        raise ConfigurationError(f"unknown split {cfg.split!r}; use one of {', '.join(SPLITS)}")
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ConfigurationError(f"members must be a positive integer (models per retina), got {members!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigurationError(f"workers must be 0 (serial) or a positive number of dask workers, got {workers!r}")
    seeds_ = cfg.retina_seeds()
    folder = check_output_folder(cfg.out, "benchmark folder")
    _check_summary_outputs(folder)
    folder.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda msg: None)
    t0 = time.perf_counter()
    with hold_lock(folder / ".retcodec.lock", f"benchmark folder {folder}"):
        say(f"benchmark: {len(seeds_)} retina(s) {seeds_[0]}..{seeds_[-1]} "
            f"({'quick family' if quick else 'family'}), results in {folder}")
        if workers:
            paths = _run_on_dask(seeds_, cfg, say)
        else:
            paths = []
            for i, seed in enumerate(seeds_):
                say(f"[{i + 1}/{len(seeds_)}] retina {seed}")
                paths.append(run_retina(seed, folder, quick=quick, device=device, run_options=run_options, say=say,
                                        members=members))
        defining = {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress", "workers")}
        written = summarize(paths, folder, config=defining)
    written["seconds"] = time.perf_counter() - t0
    say(f"benchmark done in {written['seconds']:.0f} s: {written['summary']}")
    return written


def _check_summary_outputs(folder: Path) -> None:
    """Before any retina: refuse when ``benchmark.nc`` or ``summary.html`` exists and retcodec did not write it."""
    from retcodec.errors import OutputPathError
    from retcodec.io.storage import check_output_file

    check_output_file(folder / "benchmark.nc", "benchmark file", own_only=True)
    page = folder / "summary.html"
    if page.is_file():
        with open(page, encoding="utf-8", errors="replace") as f:
            ours = "<title>retcodec benchmark</title>" in f.read(4096)
        if not ours:
            raise OutputPathError(f"{page} exists and was not written by retcodec's benchmark; move it or choose "
                                  f"another --out")


def _run_on_dask(seeds: list[int], cfg: BenchmarkConfig, say: Callable[[str], None]) -> list[Path]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as err:
        raise RetcodecError("--workers needs dask: pip install 'retcodec[dask]'") from err
    with LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        futures = {client.submit(_run_one, s, cfg.out, cfg.quick, cfg.device, cfg.run_options, cfg.members,
                                 pure=False): s
                   for s in seeds}
        done = 0
        for fut in as_completed(futures):
            fut.result()                                  # a failed retina raises here, with its error
            done += 1
            say(f"[{done}/{len(seeds)}] retina {futures[fut]} scored")
    return [retina_folder(cfg.out, s) / "scores.nc" for s in seeds]

"""What defines a run of ``retcodec run``: its configuration, its stages and their inputs."""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import xarray as xr

from retcodec.defaults import LAYERS, METHODS, RANDOM_STATE, STEPS
from retcodec.devices import resolve_device
from retcodec.errors import ConfigurationError, MissingDataError
from retcodec.io.paths import name_in_root, user_path
from retcodec.io.provenance import sha256

__all__ = ["STAGES", "DEPENDS", "STAGE_FILES", "RunConfig", "Inputs", "make_config", "resolve_inputs", "ensemble_members", "ENSEMBLE_INPUT",
           "QUICK"]

STAGES = ("contributions", "modes", "types", "irfs", "interneurons", "experiments", "statistics",
          "figures", "report")
#: the stages each stage reads (a recomputed stage makes its dependants stale)
DEPENDS = {"contributions": (), "modes": ("contributions",), "types": ("contributions", "modes"),
           "irfs": ("contributions", "modes"), "interneurons": (),
           "experiments": ("contributions", "modes", "interneurons"),
           "statistics": ("contributions",), "figures": STAGES[:7], "report": STAGES[:8]}
#: the file each stage writes in the results folder
STAGE_FILES = {"contributions": "contributions.nc", "modes": "modes.nc", "types": "cell_types.nc",
               "irfs": "irfs.nc", "interneurons": "interneurons.nc", "experiments": "experiments.nc",
               "statistics": "statistics.nc", "figures": "figures", "report": "report.html"}
#: the parameters each stage reads itself (None: all). Upstream changes reach a stage through
#: the stage cache, which recomputes everything downstream of a recomputed stage.
_DATA = ("model", "data", "experiment", "stim_type", "session", "layers", "device", "random_state")
STAGE_PARAMETERS: dict[str, tuple[str, ...] | None] = {
    "contributions": _DATA + ("steps", "method", "max_windows"),
    "modes": _DATA + ("mode_sign", "stability_seeds", "mode_options", "mode_sweep"),
    "types": _DATA + ("max_windows", "typing_windows"),
    "irfs": _DATA + ("max_windows", "irf_sets", "irf_times_per_set"),
    "interneurons": ("model", "layers", "random_state", "interneurons", "interneuron_shifts", "device",
                     "interneuron_windows"),
    "experiments": _DATA + ("max_windows", "experiment_windows", "interneurons", "interneuron_shifts",
                            "interneuron_windows", "interneuron_directions", "ensemble"),
    "statistics": _DATA,
    "figures": None,
    "report": None,
}
#: the prefix of the ensemble members' checksums (only the experiments and later stages read them)
ENSEMBLE_INPUT = "ensemble:"
#: what ``quick=True`` changes: a complete but rougher report in about a minute
QUICK = {"max_windows": 400, "irf_sets": 3, "irf_times_per_set": 4,
         "interneuron_shifts": 10, "interneuron_windows": 2000, "experiment_windows": 200,
         "typing_windows": 50}


@dataclass
class RunConfig:
    """Everything that defines a run (stored with every output)."""

    model: str | None = None
    data: str | None = None
    experiment: str | None = None
    stim_type: str | None = None
    session: str | None = None                      # openretina models: the readout's data_key
    out: str = "results"
    layers: tuple[str, ...] = LAYERS
    steps: int = STEPS
    method: str = "ig"
    device: str = "cpu"
    random_state: int = RANDOM_STATE
    workers: int = 0
    interneurons: tuple[str, ...] | None = None     # None: bundled; () : skip
    max_windows: int | None = None
    mode_sign: str = "pos"
    stability_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    mode_sweep: bool = False                             # robustness sweep of the modes (minutes)
    interneuron_directions: bool = False                 # also map and silence each interneuron as a direction
    ensemble: tuple[str, ...] | None = None              # extra member models; None: <model>_m1.pt, ... if present
    irf_sets: int = 6
    irf_times_per_set: int = 8
    mode_options: dict = field(default_factory=dict)     # extra ContributionModes parameters
    interneuron_shifts: int = 50
    interneuron_windows: int | None = None               # None: the whole interneuron recordings
    experiment_windows: int = 1000
    typing_windows: int = 400
    quick: bool = False
    force: bool = False
    progress: bool = True

    def stage_parameters(self) -> dict[str, Any]:
        """The parameters that determine results (not where they go or how they are shown)."""
        d = asdict(self)
        for k in ("out", "force", "progress", "workers", "quick"):
            d.pop(k)
        return d


def make_config(model: str | Path | None = None, data: str | Path | None = None,
                **options: Any) -> RunConfig:
    """A checked :class:`RunConfig` from ``run()``'s arguments (``seed=`` is a deprecated alias)."""
    if "seed" in options:
        warnings.warn("run(seed=...) is deprecated; use random_state=...", DeprecationWarning, stacklevel=3)
        options.setdefault("random_state", options.pop("seed"))
        options.pop("seed", None)
    known = {f.name for f in fields(RunConfig)}
    unknown = set(options) - known
    if unknown:
        raise ConfigurationError(f"unknown run option(s) {sorted(unknown)}; the options are {sorted(known)}")
    if isinstance(options.get("layers"), str):
        options["layers"] = tuple(s.strip() for s in options["layers"].split(",") if s.strip())
    elif options.get("layers") is not None:
        options["layers"] = tuple(options["layers"])
    if options.get("interneurons") is not None:
        given = options["interneurons"]                 # one folder or file, or several
        given = [given] if isinstance(given, (str, os.PathLike)) else given
        options["interneurons"] = tuple(str(p) for p in given)
    if options.get("ensemble") is not None:
        given = options["ensemble"]
        given = [given] if isinstance(given, (str, os.PathLike)) else given
        options["ensemble"] = tuple(str(user_path(p, "ensemble member")) for p in given)
    if options.get("quick"):
        for k, v in QUICK.items():
            if options.get(k) is None or k not in options:
                options[k] = v
    options["out"] = str(user_path(options.get("out", "results"), "out"))
    cfg = RunConfig(model=_expand(model), data=_expand(data), **options)
    check_config(cfg)
    return cfg


def _expand(path: str | Path | None) -> str | None:
    return str(user_path(path, "path")) if path else None


def _positive_int(value: Any, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")


def check_config(cfg: RunConfig) -> None:
    """Refuse a configuration that cannot run, before any work starts."""
    _positive_int(cfg.steps, "steps")
    _positive_int(cfg.max_windows, "max_windows", allow_none=True)
    _positive_int(cfg.irf_sets, "irf_sets")
    _positive_int(cfg.irf_times_per_set, "irf_times_per_set")
    _positive_int(cfg.interneuron_shifts, "interneuron_shifts")
    _positive_int(cfg.experiment_windows, "experiment_windows")
    _positive_int(cfg.typing_windows, "typing_windows")
    _positive_int(cfg.interneuron_windows, "interneuron_windows", allow_none=True)
    if isinstance(cfg.workers, bool) or not isinstance(cfg.workers, int) or cfg.workers < 0:
        raise ConfigurationError(f"workers must be 0 (serial) or a positive number of dask workers, "
                                 f"got {cfg.workers!r}")
    if cfg.method not in METHODS:
        raise ConfigurationError(f"unknown method {cfg.method!r}; use one of {', '.join(METHODS)}")
    if not cfg.layers:
        raise ConfigurationError("no layers given; name at least one hidden layer, e.g. conv0,conv1")
    if cfg.mode_sign not in ("pos", "both"):
        raise ConfigurationError(f"mode_sign must be 'pos' or 'both', got {cfg.mode_sign!r}")
    if len(set(cfg.stability_seeds)) < 2:
        raise ConfigurationError("stability_seeds must hold at least two distinct seeds")
    resolve_device(cfg.device)          # e.g. cuda on a machine without CUDA: refused now, not later
    if cfg.model and not Path(cfg.model).is_file():
        raise MissingDataError(f"model file {cfg.model} does not exist (or is not a file)")
    if cfg.data and not Path(cfg.data).exists():
        raise MissingDataError(f"data path {cfg.data} does not exist")


@dataclass
class Inputs:
    """Resolved inputs of a run."""

    model: Any
    model_path: Path
    recording: xr.Dataset
    recording_path: Path
    interneuron_paths: list[Path]
    checksums: dict[str, str] = field(default_factory=dict)
    ensemble_paths: list[Path] = field(default_factory=list)


def resolve_inputs(cfg: RunConfig) -> Inputs:
    """Load the model and the test split (bundled by default) and find interneuron files."""
    from retcodec.io.bundled import default_data_root, default_model_path
    from retcodec.io.models import load_model
    from retcodec.io.openretina.model import is_lightning_checkpoint
    from retcodec.io.recordings import load_recording

    model_path = Path(cfg.model) if cfg.model else default_model_path()
    if is_lightning_checkpoint(model_path):
        return _openretina_inputs(cfg, model_path)
    model = load_model(model_path, device=cfg.device)
    unknown_layers = set(cfg.layers) - set(getattr(model, "layers", {}) or {})
    if unknown_layers:
        raise ConfigurationError(f"unknown layer(s) {sorted(unknown_layers)}; the model has "
                                 f"{list(getattr(model, 'layers', {}) or {})}")
    data = Path(cfg.data) if cfg.data else default_data_root()
    if data.is_dir():
        experiment = cfg.experiment or model.meta.get("dataset")
        stim_type = cfg.stim_type or model.meta.get("stim_type") or "naturalscene"
        if not experiment or experiment == "unknown":
            raise ConfigurationError(f"{data} is a data root: give --experiment (the model does not name one)")
        # names given on the command line or read from the checkpoint must stay inside the data root
        name_in_root(data, experiment, "experiment" if cfg.experiment else "the checkpoint's dataset")
        rec_path = name_in_root(data / experiment, stim_type,
                                "stim_type" if cfg.stim_type else "the checkpoint's stim_type", ".h5")
    else:
        rec_path = data
    cells = model.meta.get("cells")
    recording = load_recording(rec_path, split="test", cells=cells if isinstance(cells, list) else None)
    inter = _interneuron_files(cfg.interneurons)
    members = ensemble_members(model_path, cfg.ensemble)
    checksums = {str(model_path): sha256(model_path), str(rec_path): sha256(rec_path)}
    checksums.update({str(p): sha256(p) for p in inter})
    checksums.update({f"{ENSEMBLE_INPUT}{p}": sha256(p) for p in members})
    return Inputs(model, model_path, recording, Path(rec_path), inter, checksums, members)


def ensemble_members(model_path: Path, given: tuple[str, ...] | None) -> list[Path]:
    """The extra ensemble members of a run: ``given`` files, or (None) the files
    ``<stem>_m1<suffix>``, ``<stem>_m2<suffix>``, ... beside the model, up to the first missing."""
    from retcodec.fitting import member_paths

    if given is not None:
        paths = [Path(p) for p in given]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise MissingDataError(f"ensemble member file(s) {missing} do not exist")
        if any(p.resolve() == model_path.resolve() for p in paths):
            raise ConfigurationError(f"the ensemble members include the model itself ({model_path}); "
                                     f"name the extra members only")
        return paths
    found = []
    for path in member_paths(model_path, 100)[1:]:
        if not path.is_file():
            break
        found.append(path)
    return found


def _openretina_inputs(cfg: RunConfig, model_path: Path) -> Inputs:
    """An openretina checkpoint, one session, and that session's recording (the distributed tree or a file)."""
    from retcodec.io.bundled import default_data_root
    from retcodec.io.openretina.model import load_openretina_model
    from retcodec.io.openretina.recording import load_published_recording
    from retcodec.io.openretina.tree import session_file, tree_root

    model = load_openretina_model(model_path, session=cfg.session or cfg.experiment, device=cfg.device)
    unknown_layers = set(cfg.layers) - set(model.layers)
    if unknown_layers:
        raise ConfigurationError(f"unknown layer(s) {sorted(unknown_layers)}; the model's core has {list(model.layers)}")
    data = Path(cfg.data) if cfg.data else default_data_root()
    stim_type = cfg.stim_type or model.meta.get("stim_type")
    if tree_root(data) is not None:
        rec_path = session_file(data, model.meta["session"], stim_type)
    elif data.is_dir():
        rec_path = data / (cfg.experiment or model.meta["session"]) / f"{stim_type}.h5"
    else:
        rec_path = data
    response = model.meta.get("response") or "firing_rate_10ms"
    recording = load_published_recording(rec_path, session=model.meta["session"], split="test", response=response)
    inter = _interneuron_files(cfg.interneurons)
    checksums = {str(model_path): sha256(model_path), str(rec_path): sha256(rec_path)}
    checksums.update({str(p): sha256(p) for p in inter})
    return Inputs(model, model_path, recording, Path(rec_path), inter, checksums)


def _interneuron_files(given: tuple[str, ...] | None) -> list[Path]:
    from retcodec.io.bundled import default_interneuron_dir

    if given is None:
        try:
            return sorted(default_interneuron_dir().glob("*.h5"))
        except MissingDataError:
            return []
    found: list[Path] = []
    for p in (Path(os.path.expanduser(g)) for g in given):
        if p.is_dir():
            found += sorted(p.glob("*.h5"))
        elif p.is_file():
            found.append(p)
        else:
            raise MissingDataError(f"interneuron file or folder {p} does not exist")
    return found

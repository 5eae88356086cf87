"""One command from a model and a recording to results: ``retcodec run``.

Stages, each writing one file into the results folder (atomically, with the
run's parameters, the retcodec version and the input files' checksums in its
attributes):

================  ====================  ==================================================
stage             file                  what
================  ====================  ==================================================
contributions     ``contributions.nc``  IG contributions to the surprisal target per layer
modes             ``modes.nc``          sparse contribution modes (and activation modes)
types             ``cell_types.nc``     cells clustered by the modes that drive them
irfs              ``irfs.nc``           IRF summaries per mode combination
interneurons      ``interneurons.nc``   model units vs interneuron recordings
statistics        ``statistics.nc``     sparsity, E/I correlation, dimensionality, fit
figures           ``figures/*.png|svg`` figures a lab would put in a paper
report            ``report.html``       self-contained report with generated hypotheses
================  ====================  ==================================================

A second run with the same ``out`` skips every stage whose file exists and was
made with the same parameters and inputs; a stage whose inputs or parameters
changed is recomputed, and so is everything downstream of it (``force=True``
recomputes all). An interrupted run keeps every finished file, and the
contribution stage resumes from its partial chunks.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr

from retcodec.errors import ConfigurationError, MissingDataError
from retcodec.io.provenance import provenance_attrs, sha256

STAGES = ("contributions", "modes", "types", "irfs", "interneurons", "statistics", "figures", "report")
#: the stages each stage reads (a recomputed stage makes these dependants stale)
DEPENDS = {"contributions": (), "modes": ("contributions",), "types": ("contributions", "modes"),
           "irfs": ("contributions", "modes"), "interneurons": (), "statistics": ("contributions",),
           "figures": STAGES[:6], "report": STAGES[:7]}
#: parameters of the interneuron comparison (it does not depend on the contribution settings)
INTERNEURON_PARAMETERS = ("model", "layers", "seed", "interneurons", "interneuron_shifts", "device")


@dataclass
class RunConfig:
    """Everything that defines a run (stored with every output)."""

    model: str | None = None
    data: str | None = None
    experiment: str | None = None
    stim_type: str | None = None
    out: str = "results"
    layers: tuple[str, ...] = ("conv0", "conv1")
    steps: int = 20
    method: str = "ig"
    device: str = "cpu"
    seed: int = 0
    workers: int = 0
    interneurons: tuple[str, ...] | None = None     # None: bundled; () : skip
    max_windows: int | None = None
    mode_sign: str = "pos"
    stability_seeds: tuple[int, ...] = (0, 1, 2)
    irf_sets: int = 6
    irf_times_per_set: int = 8
    mode_options: dict = field(default_factory=dict)     # extra ContributionModes parameters
    interneuron_shifts: int = 50
    force: bool = False
    progress: bool = True

    def stage_parameters(self) -> dict[str, Any]:
        """The parameters that determine results (not where they go or how they are shown)."""
        d = asdict(self)
        for k in ("out", "force", "progress", "workers"):
            d.pop(k)
        return d


@dataclass
class Inputs:
    """Resolved inputs of a run."""

    model: Any
    model_path: Path
    recording: xr.Dataset
    recording_path: Path
    interneuron_paths: list[Path]
    checksums: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- inputs
def resolve_inputs(cfg: RunConfig) -> Inputs:
    """Load the model and the test split (bundled by default) and find interneuron files."""
    from retcodec.io.bundled import default_data_root, default_interneuron_dir, default_model_path
    from retcodec.io.models import load_model
    from retcodec.io.recordings import load_recording

    model_path = Path(cfg.model) if cfg.model else default_model_path()
    model = load_model(model_path, device=cfg.device)
    data = Path(cfg.data) if cfg.data else default_data_root()
    if data.is_dir():
        experiment = cfg.experiment or model.meta.get("dataset")
        stim_type = cfg.stim_type or model.meta.get("stim_type")
        if not experiment or experiment == "unknown":
            raise ConfigurationError(f"{data} is a data root: give --experiment (the model does not name one)")
        rec_path = data / experiment / f"{stim_type}.h5"
    else:
        rec_path = data
    cells = model.meta.get("cells")
    recording = load_recording(rec_path, split="test", cells=cells if isinstance(cells, list) else None)
    if cfg.interneurons is None:
        try:
            inter = sorted(default_interneuron_dir().glob("*.h5"))
        except MissingDataError:
            inter = []
    else:
        inter = []
        for p in map(Path, cfg.interneurons):
            if p.is_dir():
                inter += sorted(p.glob("*.h5"))
            elif p.exists():
                inter.append(p)
            else:
                raise MissingDataError(f"interneuron file or folder {p} does not exist")
    checksums = {str(model_path): sha256(model_path), str(rec_path): sha256(rec_path)}
    checksums.update({str(p): sha256(p) for p in inter})
    return Inputs(model, model_path, recording, Path(rec_path), inter, checksums)


def _windows(inputs: Inputs, cfg: RunConfig):
    """The model's input windows of the test split (the first ``max_windows`` when set)."""
    return first_windows(inputs.recording, inputs.model, cfg.max_windows)


def first_windows(recording: xr.Dataset, model: Any, n: int | None = None):
    """Windows of ``recording`` z-scored with the model's norm stats, limited to the first ``n``."""
    from retcodec.io.recordings import windows

    history = int(model.img_shape[0]) if hasattr(model, "img_shape") else 40
    if n is not None:
        if n < 1:
            raise ConfigurationError(f"max_windows must be at least 1, got {n}")
        recording = recording.isel(time=slice(0, n + history))
    return windows(recording, norm_stats=model.meta.get("norm_stats"), history=history)


# --------------------------------------------------------------------------- bookkeeping
class Run:
    """State of one run: config, inputs, output folder, which stages are current."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.inputs = resolve_inputs(cfg)
        self.params = cfg.stage_parameters()
        self.stale: set[str] = set(STAGES) if cfg.force else set()
        self.timings: dict[str, float] = {}
        self.log: list[str] = []

    # what every output carries
    def attrs(self, stage: str) -> dict[str, Any]:
        return provenance_attrs(self.params, stage=stage, run_parameters=self.signature(stage),
                                input_checksums=json.dumps(self.inputs.checksums, sort_keys=True),
                                model=str(self.inputs.model_path), data=str(self.inputs.recording_path))

    def signature(self, stage: str) -> str:
        params, inputs = self.params, self.inputs.checksums
        if stage == "interneurons":
            params = {k: params[k] for k in INTERNEURON_PARAMETERS}
            inputs = {k: v for k, v in inputs.items() if k != str(self.inputs.recording_path)}
        return json.dumps({"stage": stage, "params": params, "inputs": inputs}, sort_keys=True, default=str)

    def is_current(self, stage: str, path: Path) -> bool:
        """True when ``path`` exists and was made by this stage with these parameters and inputs."""
        if stage in self.stale or not path.exists():
            return False
        try:
            if path.suffix == ".nc":
                import h5py
                with h5py.File(path, "r") as f:
                    sig = f.attrs.get("run_parameters")
            else:
                sig = json.loads((self.out / ".stages.json").read_text()).get(stage)
        except Exception:  # noqa: BLE001 - unreadable: recompute
            return False
        if isinstance(sig, bytes):
            sig = sig.decode()
        return sig == self.signature(stage)

    def mark_downstream(self, stage: str) -> None:
        """``stage`` is being recomputed: every stage that reads it (transitively) is stale."""
        changed = True
        marked = {stage}
        while changed:
            new = {s for s, deps in DEPENDS.items() if marked & set(deps)} - marked
            changed = bool(new)
            marked |= new
        self.stale.update(marked - {stage})

    def record_stage(self, stage: str) -> None:
        f = self.out / ".stages.json"
        d = json.loads(f.read_text()) if f.exists() else {}
        d[stage] = self.signature(stage)
        from retcodec.io.storage import atomic_path
        with atomic_path(f) as tmp:
            tmp.write_text(json.dumps(d, indent=1))

    def say(self, msg: str) -> None:
        self.log.append(msg)
        if self.cfg.progress:
            print(msg, flush=True)


# --------------------------------------------------------------------------- stages
def stage_contributions(run: Run) -> xr.DataTree:
    from retcodec.engine.contributions import contributions

    cfg, path = run.cfg, run.out / "contributions.nc"
    if run.is_current("contributions", path):
        return xr.open_datatree(path, engine="h5netcdf")
    run.mark_downstream("contributions")
    if path.exists():
        path.unlink()          # stale: made with other parameters or inputs
    w = _windows(run.inputs, cfg)
    kw: dict[str, Any] = {}
    if cfg.workers:
        kw.update(backend="dask", n_workers=cfg.workers)
    tree = contributions(run.inputs.model, w, layers=cfg.layers, method=cfg.method, steps=cfg.steps,
                         target="surprisal", device=cfg.device, progress=cfg.progress, seed=cfg.seed,
                         **kw)
    tree.attrs.update(run.attrs("contributions"))
    _write_tree(tree, path)
    return xr.open_datatree(path, engine="h5netcdf")


def _write_tree(tree: xr.DataTree, path: Path) -> None:
    from retcodec.io.storage import write_netcdf_atomic
    write_netcdf_atomic(tree, path)


def stage_modes(run: Run, contrib: xr.DataTree) -> dict[str, xr.Dataset]:
    from retcodec.modes import ContributionModes, fit_layer, load_modes, mode_stability, save_modes

    cfg, path = run.cfg, run.out / "modes.nc"
    if run.is_current("modes", path):
        return load_modes(path)
    run.mark_downstream("modes")
    out: dict[str, xr.Dataset] = {}
    for layer in cfg.layers:
        node = contrib[layer].to_dataset()
        est = ContributionModes(random_state=cfg.seed, sign=cfg.mode_sign, **cfg.mode_options)
        ds = fit_layer(est, node["contribution"].load(), sign=cfg.mode_sign, layer=layer)
        stab = mode_stability(ContributionModes(sign=cfg.mode_sign, **cfg.mode_options),
                              _feature_matrix(node["contribution"], cfg.mode_sign), seeds=cfg.stability_seeds)
        ds.attrs["stability_matched_cosine_mean"] = float(np.nanmean(stab["mean_cosine"].values)) \
            if "mean_cosine" in stab else float("nan")
        ds.attrs.update({k: v for k, v in run.attrs("modes").items() if k not in ds.attrs or k == "run_parameters"})
        out[layer] = ds
        act = activation_modes(node["activation"].load(), seed=cfg.seed, **cfg.mode_options)
        act.attrs.update(run.attrs("modes"))
        out[f"{layer}_activation"] = act
        run.say(f"modes {layer}: {ds.sizes['mode']} alive modes, R2 = {float(ds['r2']):.3f}, "
                f"stability (matched cosine) = {ds.attrs['stability_matched_cosine_mean']:.3f}; "
                f"activation modes R2 = {float(act['r2']):.3f}")
    save_modes(out, path)
    _stamp_nc(path, run.attrs("modes"))
    return load_modes(path)


def _feature_matrix(contribution: xr.DataArray, sign: str) -> np.ndarray:
    from retcodec.modes import layer_matrix
    return layer_matrix(contribution, sign)[0]


def activation_modes(activation: xr.DataArray, seed: int = 0, **options: Any) -> xr.Dataset:
    """Control: the same sparse estimator on the spatially summed activations (signed dictionary)."""
    from retcodec.modes import ContributionModes

    X = activation.transpose("time", "channel").values.astype(np.float64)
    X = X - X.mean(axis=0)
    est = ContributionModes(random_state=seed, nonneg=False, **options).fit(X)
    z = est.transform(X)
    return xr.Dataset({"modes": (("mode", "channel"), est.components_),
                       "loadings": (("time", "mode"), z), "r2": est.r2_},
                      coords={"time": activation["time"].values, "channel": activation["channel"].values,
                              "mode": np.arange(z.shape[1]), "atom": ("mode", est.atom_index_)},
                      attrs={"estimator": "ContributionModes", "fitted_on": "activation (centred)"})


def _stamp_nc(path: Path, attrs: dict[str, Any]) -> None:
    """Add the run's provenance to the root of a finished netCDF file (attrs only; the file is ours).

    Written to a copy that replaces the file atomically, so a reader never sees a
    file without its provenance.
    """
    import shutil

    import h5py

    from retcodec.io.storage import atomic_path
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            for k, v in attrs.items():
                f.attrs[k] = v


def stage_types(run: Run, contrib: xr.DataTree, modes: dict[str, xr.Dataset]) -> xr.DataTree:
    from retcodec.analysis.celltypes import cell_types, cluster_rates

    path = run.out / "cell_types.nc"
    if run.is_current("types", path):
        return xr.open_datatree(path, engine="h5netcdf")
    run.mark_downstream("types")
    rates = model_rates(contrib)
    truth = run.inputs.recording["cell_type"] if "cell_type" in run.inputs.recording.coords else None
    layers = run.cfg.layers
    kw = dict(random_state=run.cfg.seed, true_types=truth)
    contrib_types = cell_types({l: modes[l]["loadings"] for l in layers}, rates, **kw)
    act_types = cell_types({l: modes[f"{l}_activation"]["loadings"] for l in layers}, rates, **kw)
    rate_types = cluster_rates(rates, **kw)
    tree = xr.DataTree.from_dict({
        "/": xr.Dataset({"model_rate": rates}, attrs=run.attrs("types")),
        "/contribution_modes": contrib_types.to_dataset(),
        "/activation_modes": act_types.to_dataset(),
        "/rates": rate_types})
    for name, t in (("contribution_modes", contrib_types), ("activation_modes", act_types)):
        for child in t.children:
            tree[f"{name}/{child}"] = t[child].to_dataset()
    _write_tree(tree, path)
    run.say("cell types: " + summarize_types(tree))
    return xr.open_datatree(path, engine="h5netcdf")


def model_rates(contrib: xr.DataTree) -> xr.DataArray:
    """The model's rates ``(time, cell)`` stored with the contributions."""
    out = contrib.to_dataset()["output"] if "output" in contrib.to_dataset() else None
    if out is None:
        raise MissingDataError("contributions.nc lacks the model output; recompute contributions")
    return out.load().rename("model_rate")


def type_summary(tree: xr.DataTree) -> list[dict[str, Any]]:
    """One row per clustering: features, layer, chosen k, ARI vs truth (when known)."""
    rows = []
    for group in ("contribution_modes", "activation_modes"):
        for layer in tree[group].children:
            node = tree[group][layer].to_dataset()
            rows.append({"features": group.replace("_", " "), "layer": layer,
                         "k": int(node["chosen_k"]),
                         "ari_truth": float(node["ari_truth"]) if "ari_truth" in node else None})
    node = tree["rates"].to_dataset()
    rows.append({"features": "raw rates", "layer": "-", "k": int(node["chosen_k"]),
                 "ari_truth": float(node["ari_truth"]) if "ari_truth" in node else None})
    return rows


def summarize_types(tree: xr.DataTree) -> str:
    return "; ".join(f"{r['features']} {r['layer']}: k={r['k']}"
                     + (f", ARI vs truth={r['ari_truth']:.2f}" if r["ari_truth"] is not None else "")
                     for r in type_summary(tree))


def stage_irfs(run: Run, contrib: xr.DataTree, modes: dict[str, xr.Dataset]) -> xr.DataTree:
    from retcodec.analysis.combinations import combination_irfs, mode_combinations

    path = run.out / "irfs.nc"
    if run.is_current("irfs", path):
        return xr.open_datatree(path, engine="h5netcdf")
    run.mark_downstream("irfs")
    cfg = run.cfg
    rates = model_rates(contrib)
    w = _windows(run.inputs, cfg)
    nodes: dict[str, xr.Dataset] = {"/": xr.Dataset(attrs=run.attrs("irfs"))}
    for layer in cfg.layers:
        loadings = modes[layer]["loadings"].load()
        combos = mode_combinations(loadings, max_sets=cfg.irf_sets, min_count=2)
        res = combination_irfs(run.inputs.model, w, loadings, rates, combos, seed=cfg.seed,
                               max_times_per_set=cfg.irf_times_per_set, device=cfg.device,
                               progress=cfg.progress, mean_irf=False)
        nodes[f"/{layer}"] = res
        nodes[f"/{layer}/combinations"] = combos
    tree = xr.DataTree.from_dict(nodes)
    _write_tree(tree, path)
    return xr.open_datatree(path, engine="h5netcdf")


def stage_interneurons(run: Run) -> xr.Dataset | None:
    from retcodec.analysis.interneuron_match import match_interneurons

    path = run.out / "interneurons.nc"
    if not run.inputs.interneuron_paths:
        run.say("interneurons: no interneuron files given; stage skipped")
        return None
    if run.is_current("interneurons", path):
        return xr.open_dataset(path, engine="h5netcdf")
    run.mark_downstream("interneurons")
    cfg = run.cfg
    unit_types = insilico_unit_types(run)
    match = match_interneurons(run.inputs.model, [str(p) for p in run.inputs.interneuron_paths],
                               layers=cfg.layers, seed=cfg.seed, device=cfg.device,
                               n_shifts=cfg.interneuron_shifts, unit_types=unit_types,
                               progress=cfg.progress)
    match.attrs.update(run.attrs("interneurons"))
    from retcodec.io.storage import write_netcdf_atomic
    write_netcdf_atomic(match, path)
    rate = match.attrs.get("type_match_rate")
    run.say(f"interneurons: median held-out r = {float(np.nanmedian(match['heldout_correlation'])):.2f} "
            f"(chance p95 median {float(np.nanmedian(match['chance_p95'])):.2f})"
            + (f", best-unit type matches truth for {rate:.0%}" if rate is not None else ""))
    return xr.open_dataset(path, engine="h5netcdf")


def insilico_unit_types(run: Run, n_frames: int = 3000) -> xr.Dataset | None:
    """For in-silico data: label model channels by the true interneuron type they resemble."""
    from retcodec.insilico.retina import InSilicoRetina, CircuitParams, boxes, pad_to
    from retcodec.analysis.interneuron_match import label_units_by_truth
    from retcodec.io.recordings import windows

    circuit = run.inputs.recording.attrs.get("truth_circuit")
    if not circuit:
        return None
    params = CircuitParams.from_json(circuit)
    retina = InSilicoRetina(params.seed, params)
    rng = np.random.default_rng([params.seed, 999])
    contrast = pad_to(2.0 * boxes(n_frames, rng).astype(np.float32) - 1.0)
    v = retina.bipolar_potentials(contrast)
    maps = dict(v)
    maps.update(retina.amacrine_potentials({k: retina.rectify(x) for k, x in v.items()}))
    w = windows(contrast, norm_stats={"mean": 0.0, "std": 1.0})
    return label_units_by_truth(run.inputs.model, w, maps, layers=run.cfg.layers, device=run.cfg.device)


def stage_statistics(run: Run, contrib: xr.DataTree) -> xr.Dataset:
    from retcodec.analysis.evaluation import evaluate
    from retcodec.analysis.statistics import layer_statistics

    path = run.out / "statistics.nc"
    if run.is_current("statistics", path):
        return xr.open_dataset(path, engine="h5netcdf")
    run.mark_downstream("statistics")
    stats = layer_statistics(contrib)
    ev = evaluate(run.inputs.model, run.inputs.recording, device=run.cfg.device)
    ev = ev.rename({k: f"fit_{k}" for k in ev.data_vars})
    ds = xr.merge([stats, ev], combine_attrs="drop")
    ds.attrs.update(run.attrs("statistics"))
    ds.attrs.update({f"fit_{k}": v for k, v in ev.attrs.items()})
    comp = contrib.to_dataset().get("completeness_error")
    if comp is not None:
        ds["completeness_error"] = comp
    from retcodec.io.storage import write_netcdf_atomic
    write_netcdf_atomic(ds, path)
    return xr.open_dataset(path, engine="h5netcdf")


def stage_figures(run: Run, contrib: xr.DataTree, modes: dict[str, xr.Dataset], types: xr.DataTree,
                  irfs: xr.DataTree, inter: xr.Dataset | None, stats: xr.Dataset) -> list[Path]:
    from retcodec.report import figures as fg

    folder = run.out / "figures"
    if run.is_current("figures", folder) and all(p.exists() for p in _figure_paths(run)):
        return _figure_paths(run)
    run.mark_downstream("figures")
    folder.mkdir(exist_ok=True)
    rates = model_rates(contrib)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        written.extend(fg.save_figure(fig, folder / name))
        import matplotlib.pyplot as plt
        plt.close(fig)

    n = min(contrib[run.cfg.layers[0]].sizes["time"], 1000)
    t = contrib[run.cfg.layers[0]]["time"].values
    for layer in run.cfg.layers:
        node = contrib[layer].to_dataset()
        save(fg.plot_contribution_heatmap(node, rates, modes[layer]["loadings"], time_slice=(t[0], t[n - 1])),
             f"contributions_{layer}")
        save(fg.plot_modes(modes[layer]["modes"]), f"modes_{layer}")
        tnode = types["contribution_modes"][layer].to_dataset()
        troot = types["contribution_modes"].to_dataset()
        save(fg.plot_mode_cell_matrix(tnode["correlation"], tnode["cluster"], tnode.get("linkage"),
                                      troot["true_type"] if "true_type" in troot.coords else None),
             f"cell_types_{layer}")
        inode = irfs[layer].to_dataset()
        if "spatial" in inode and inode.sizes.get("combination", 0):
            save(fg.plot_irf_filters(inode["spatial"], inode["temporal"]), f"irfs_{layer}")
    if inter is not None:
        save(fg.plot_interneuron_matches(inter), "interneurons")
    save(fg.plot_sparsity(stats), "sparsity")
    ev = stats[[v for v in stats.data_vars if v.startswith("fit_")]]
    ev = ev.rename({v: v[4:] for v in ev.data_vars})
    save(fg.plot_fit_quality(ev), "fit_quality")
    run.record_stage("figures")
    return written


def _figure_paths(run: Run) -> list[Path]:
    return sorted((run.out / "figures").glob("*.png"))


# --------------------------------------------------------------------------- run
def run(model: str | Path | None = None, data: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Analyse a model and its recording end to end (the bundled default when none is given).

    Options are the fields of :class:`RunConfig` (``out``, ``layers``, ``steps``,
    ``method``, ``device``, ``seed``, ``workers``, ``interneurons``,
    ``max_windows``, ``force``, ``progress``, ...). Returns a summary dict with
    the output paths, timings and key numbers.
    """
    unknown = set(options) - {f for f in RunConfig.__dataclass_fields__}
    if unknown:
        raise ConfigurationError(f"unknown run option(s) {sorted(unknown)}; see retcodec.pipeline.RunConfig")
    if "layers" in options and isinstance(options["layers"], str):
        options["layers"] = tuple(s.strip() for s in options["layers"].split(",") if s.strip())
    if options.get("interneurons") is not None:
        options["interneurons"] = tuple(str(p) for p in options["interneurons"])
    cfg = RunConfig(model=str(model) if model else None, data=str(data) if data else None, **options)
    _check_config(cfg)
    r = Run(cfg)
    unknown_layers = set(cfg.layers) - set(r.inputs.model.layers)
    if unknown_layers:
        raise ConfigurationError(f"unknown layer(s) {sorted(unknown_layers)}; the model has {list(r.inputs.model.layers)}")

    def timed(stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        if cfg.progress:
            print(f"[{stage}]", flush=True)
        out = fn(r, *args)
        r.timings[stage] = time.perf_counter() - t0
        return out

    contrib = timed("contributions", stage_contributions)
    modes = timed("modes", stage_modes, contrib)
    types = timed("types", stage_types, contrib, modes)
    irfs = timed("irfs", stage_irfs, contrib, modes)
    inter = timed("interneurons", stage_interneurons)
    stats = timed("statistics", stage_statistics, contrib)
    figs = timed("figures", stage_figures, contrib, modes, types, irfs, inter, stats)
    from retcodec.report.html import write_report
    report = timed("report", lambda run_, *a: write_report(run_, contrib, modes, types, irfs, inter, stats, figs))
    total = sum(r.timings.values())
    r.say(f"done in {total:.0f} s; report: {report}")
    return {"out": str(r.out), "report": str(report), "timings": r.timings, "log": r.log}


def _check_config(cfg: RunConfig) -> None:
    if cfg.steps < 1:
        raise ConfigurationError(f"steps must be >= 1, got {cfg.steps}")
    if cfg.method not in ("ig", "actgrad", "inputgrad", "smoothgrad"):
        raise ConfigurationError(f"unknown method {cfg.method!r}; use ig, actgrad, inputgrad or smoothgrad")
    if not cfg.layers:
        raise ConfigurationError("no layers given")
    if cfg.model and not Path(cfg.model).exists():
        raise MissingDataError(f"model file {cfg.model} does not exist")
    if cfg.data and not Path(cfg.data).exists():
        raise MissingDataError(f"data path {cfg.data} does not exist")


# --------------------------------------------------------------------------- CLI glue
def cli_stage(args: Any) -> int:
    """Entry point of ``retcodec run|contributions|modes|types|irf``."""
    if args.command == "run":
        inter = args.interneurons
        summary = run(args.model, args.data, experiment=args.experiment, stim_type=args.stim_type,
                      out=str(args.out), layers=args.layers, steps=args.steps, method=args.method,
                      device=args.device, seed=args.seed, workers=args.workers,
                      interneurons=None if inter is None else tuple(map(str, inter)),
                      max_windows=args.max_windows, force=args.force, progress=not args.quiet)
        print(f"results in {summary['out']}; open {summary['report']}")
        return 0
    return _single_stage(args)


def _single_stage(args: Any) -> int:
    from retcodec.cli import _resolve_inputs
    from retcodec.io.storage import write_netcdf_atomic

    if args.command == "contributions":
        from retcodec.engine.contributions import contributions
        from retcodec.io.recordings import windows
        from retcodec.engine.targets import CellRate

        model, rec, _ = _resolve_inputs(args)
        w = first_windows(rec, model, args.max_windows)
        target: Any = args.target
        if target.startswith("cell:"):
            target = CellRate(int(target.split(":", 1)[1]), cells=model.meta.get("cells"))
        elif target == "sum":
            target = "sum_of_rates"
        kw: dict[str, Any] = {}
        if args.workers or args.scheduler:
            kw.update(backend="dask", n_workers=args.workers or 2, scheduler=args.scheduler)
        contributions(model, w, layers=args.layers.split(","), method=args.method, steps=args.steps,
                      target=target, device=args.device, out=args.out, progress=not args.quiet, **kw)
        print(f"wrote {args.out}")
        return 0
    if args.command == "modes":
        from retcodec.modes import ContributionModes, fit_layer, save_modes

        tree = xr.open_datatree(args.contributions, engine="h5netcdf")
        out = {}
        for layer in tree.children:
            ds = fit_layer(ContributionModes(random_state=args.seed, sign=args.sign),
                           tree[layer]["contribution"].load(), sign=args.sign, layer=layer)
            out[layer] = ds
            print(f"{layer}: {ds.sizes['mode']} modes, R2 = {float(ds['r2']):.3f}")
        save_modes(out, args.out)
        print(f"wrote {args.out}")
        return 0
    if args.command == "types":
        from retcodec.analysis.celltypes import cell_types
        from retcodec.modes import load_modes

        tree = xr.open_datatree(args.contributions, engine="h5netcdf")
        modes = load_modes(args.modes)
        rates = model_rates(tree)
        res = cell_types({k: v["loadings"] for k, v in modes.items() if not k.endswith("_activation")},
                         rates, random_state=args.seed)
        write_netcdf_atomic(res, args.out)
        print(f"wrote {args.out}")
        return 0
    if args.command == "irf":
        from retcodec.analysis.irf import irf
        from retcodec.io.recordings import windows

        model, rec, _ = _resolve_inputs(args)
        w = windows(rec, norm_stats=model.meta.get("norm_stats"))
        cells = [int(c) for c in args.cells.split(",")] if args.cells else None
        times = _parse_times(args.times, len(w)) if args.times else None
        res = irf(model, w, cells=cells, times=times, device=args.device, out=args.out, progress=True)
        if not Path(args.out).exists():
            write_netcdf_atomic(res.to_dataset(name="irf"), args.out)
        print(f"wrote {args.out}")
        return 0
    raise ConfigurationError(f"unknown stage {args.command!r}")


def _parse_times(spec: str, n: int) -> list[int]:
    """``"a:b:s"`` or ``"i,j,k"`` -> window positions."""
    try:
        if ":" in spec:
            parts = [int(p) if p else None for p in spec.split(":")]
            return list(range(n))[slice(*parts)]
        return [int(p) for p in spec.split(",")]
    except ValueError:
        raise ConfigurationError(f"--times must look like 0:500:10 or 3,17,42, got {spec!r}") from None

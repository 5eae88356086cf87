"""The stages of ``retcodec run``: each reads its inputs, calls the library, writes one output.

Orchestration only: the science lives in the engine, modes and analysis modules. A
stage whose recorded outputs are current (see :mod:`retcodec.pipeline.cache`) is
loaded instead of recomputed.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr

from retcodec.errors import OutputPathError
from retcodec.io.provenance import provenance_attrs
from retcodec.io.storage import atomic_path, write_netcdf_atomic
from retcodec.memory import release_memory
from retcodec.pipeline.cache import StageCache
from retcodec.pipeline.config import STAGE_FILES, Inputs, RunConfig

#: the robustness sweep of ``retcodec run --mode-sweep``, next to ``modes.nc``
MODE_SWEEP_FILE = "modes_sweep.nc"

__all__ = ["Run", "load_mode_sweeps", "MODE_SWEEP_FILE", "stage_contributions", "stage_modes", "stage_types", "stage_irfs",
           "stage_interneurons", "stage_experiments", "stage_statistics", "stage_figures", "stage_report"]


class Run:
    """State of one run: config, inputs, output folder, stage cache, timings, log."""

    def __init__(self, cfg: RunConfig, inputs: Inputs) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.inputs = inputs
        self.params = cfg.stage_parameters()
        # the files actually analysed (the bundled default when none was given), not None
        self.params.update(model=str(inputs.model_path), data=str(inputs.recording_path))
        self.cache = StageCache(self.out, self.params, inputs.checksums, str(inputs.recording_path),
                                force=cfg.force)
        self.timings: dict[str, float] = {}
        self.log: list[str] = []

    def attrs(self, stage: str) -> dict[str, Any]:
        """Provenance every output carries."""
        return provenance_attrs(self.params, stage=stage, run_parameters=self.cache.signature(stage),
                                input_checksums=json.dumps(self.inputs.checksums, sort_keys=True),
                                model=str(self.inputs.model_path), data=str(self.inputs.recording_path))

    def say(self, msg: str) -> None:
        self.log.append(msg)
        if self.cfg.progress:
            print(msg, flush=True)

    def path(self, stage: str) -> Path:
        return self.out / STAGE_FILES[stage]

    def step(self, stage: str, compute: Callable[[], list[Path]], load: Callable[[], Any]) -> Any:
        """Reuse ``stage``'s outputs when current, else compute them; say which, and time it."""
        fresh = self.cache.freshness(stage)
        if fresh.current:
            seconds = self.cache.seconds(stage)
            self.timings[stage] = seconds if seconds is not None else 0.0
            self.say(f"[{stage}] skipped (up to date; computed in {self.timings[stage]:.1f} s)")
            return load()
        foreign = self.cache.foreign(stage)
        if foreign:
            raise OutputPathError(f"results folder {self.out} holds {', '.join(foreign)}, which retcodec did not "
                                  f"write there; it never overwrites files it did not make. Move them, or "
                                  f"choose another results folder (--out)")
        self.say(f"[{stage}] computing ({fresh.reason})")
        for dependant in self.cache.invalidate(stage, fresh.reason):
            self.log.append(f"  {dependant} will be recomputed too")
        t0 = time.perf_counter()
        files = compute()
        release_memory(collect=True)          # one stage's temporaries are not the next one's
        seconds = time.perf_counter() - t0
        self.cache.record(stage, files, seconds)
        self.timings[stage] = seconds
        self.say(f"[{stage}] done in {seconds:.1f} s")
        return load()


def _has_node(tree: xr.DataTree, path: str) -> bool:
    """Whether ``tree`` holds the node at ``path`` (``in`` sees direct children only)."""
    try:
        tree[path]
    except KeyError:
        return False
    return True


def _open_tree(path: Path) -> Callable[[], xr.DataTree]:
    return lambda: xr.open_datatree(path, engine="h5netcdf")


def _open_dataset(path: Path) -> Callable[[], xr.Dataset]:
    return lambda: xr.open_dataset(path, engine="h5netcdf")


def stamp_attrs(path: Path, attrs: dict[str, Any]) -> None:
    """Add provenance attrs to the root of a finished netCDF file, replacing it atomically."""
    import h5py

    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            for k, v in attrs.items():
                f.attrs[k] = v


# --------------------------------------------------------------------------- stages
def stage_contributions(run: Run) -> xr.DataTree:
    """IG contributions to the surprisal target; streams chunks so an interrupted run resumes."""
    from retcodec.engine.contributions import contributions
    from retcodec.engine.store import discard_partial, owns_partial
    from retcodec.errors import ConfigurationError
    from retcodec.io.recordings import model_windows

    cfg, path = run.cfg, run.path("contributions")

    def compute() -> list[Path]:
        if path.exists():
            path.unlink()
        w = model_windows(run.inputs.recording, run.inputs.model, cfg.max_windows)
        kw: dict[str, Any] = dict(layers=cfg.layers, method=cfg.method, steps=cfg.steps, target="surprisal",
                                  device=cfg.device, progress=cfg.progress, random_state=cfg.random_state, out=path)
        if cfg.workers:
            kw.update(backend="dask", n_workers=cfg.workers)
        partial = path.with_name(path.name + ".partial")
        if owns_partial(partial):
            n_done = len(list(partial.glob("chunk-*.npz")))
            run.say(f"  resuming from {n_done} finished chunk(s) in {partial.name}")
        try:
            contributions(run.inputs.model, w, **kw)
        except ConfigurationError as err:
            if not partial.exists() or "partial run with different parameters" not in str(err):
                raise
            run.say(f"  discarding {partial.name}: it was made with other parameters")
            discard_partial(partial)
            contributions(run.inputs.model, w, **kw)
        stamp_attrs(path, run.attrs("contributions"))
        return [path]

    return run.step("contributions", compute, _open_tree(path))


def stage_modes(run: Run, contrib: xr.DataTree) -> dict[str, xr.Dataset]:
    """Compact contribution modes per layer with their seed stability, and the activation-mode control."""
    from retcodec.modes import ContributionModes, fit_layer, layer_matrix, load_modes, save_modes
    from retcodec.modes.control import fit_activation_modes
    from retcodec.modes.sweep import robustness_sweep

    cfg, path = run.cfg, run.path("modes")

    def compute() -> list[Path]:
        out: dict[str, xr.Dataset] = {}
        sweeps: dict[str, xr.Dataset] = {}
        cpu_start = time.process_time()
        for layer in cfg.layers:
            node = contrib[layer].to_dataset()
            run.say(f"  {layer}: fitting contribution modes, stability over seeds {list(cfg.stability_seeds)}")
            est = ContributionModes(random_state=cfg.random_state, sign=cfg.mode_sign, **cfg.mode_options)
            ds = fit_layer(est, node["contribution"].load(), sign=cfg.mode_sign, layer=layer,
                           stability_seeds=cfg.stability_seeds)
            ds.attrs.update({k: v for k, v in run.attrs("modes").items()
                             if k not in ds.attrs or k == "run_parameters"})
            out[layer] = ds
            run.say(f"  {layer}: activation-mode control")
            act = fit_activation_modes(node["activation"].load(), random_state=cfg.random_state,
                                       **cfg.mode_options)
            act.attrs.update(run.attrs("modes"))
            out[f"{layer}_activation"] = act
            if cfg.mode_sweep:
                run.say(f"  {layer}: robustness sweep (threshold, dictionary size, L1, seed)")
                sweep = robustness_sweep(est, layer_matrix(node["contribution"].load(), cfg.mode_sign)[0],
                                         progress=lambda message: run.say(f"    {layer}: {message}"))
                sweep.attrs.update(run.attrs("modes"), layer=layer)
                sweeps[layer] = sweep
            run.say(f"  {layer}: {ds.sizes['mode']} modes ({ds.attrs.get('count_rule', '')}), "
                    f"R2 = {float(ds['r2']):.3f}, L0 = {float(ds.attrs.get('l0', np.nan)):.2f} "
                    f"(no active mode in {100 * float(ds.attrs.get('fraction_none', np.nan)):.1f} % of bins), "
                    f"seed stability = {float(ds.attrs.get('stability', np.nan)):.3f}; "
                    f"activation modes: {act.sizes['mode']}, R2 = {float(act['r2']):.3f}")
        cpu = time.process_time() - cpu_start
        for ds in out.values():
            ds.attrs["stage_cpu_seconds"] = cpu
        run.say(f"  modes: {cpu:.1f} s of CPU time in this process")
        save_modes(out, path)
        stamp_attrs(path, run.attrs("modes"))
        sweep_path = run.out / MODE_SWEEP_FILE
        if not sweeps:
            sweep_path.unlink(missing_ok=True)           # a sweep of earlier modes would mislead
            return [path]
        save_modes(sweeps, sweep_path)
        return [path, sweep_path]

    return run.step("modes", compute, lambda: load_modes(path))


def load_mode_sweeps(run: Run) -> dict[str, xr.Dataset]:
    """The modes' robustness sweeps of this run (layer -> Dataset; empty when not asked for)."""
    from retcodec.modes import load_modes

    path = run.out / MODE_SWEEP_FILE
    if not run.cfg.mode_sweep or not path.is_file():
        return {}
    sweeps = load_modes(path)
    return sweeps if isinstance(sweeps, dict) else {str(sweeps.attrs.get("layer", "layer")): sweeps}


def stage_types(run: Run, contrib: xr.DataTree, modes: dict[str, xr.Dataset]) -> xr.DataTree:
    """The cell types (drive profiles of each cell's own rate), with every control clustered alike."""
    from retcodec.analysis.celltypes import cell_types_primary
    from retcodec.analysis.rates import model_rates
    from retcodec.io.recordings import model_windows

    cfg, path = run.cfg, run.path("types")

    def compute() -> list[Path]:
        rates = model_rates(contrib)
        rec = run.inputs.recording
        truth = rec["cell_type"] if "cell_type" in rec.coords else None
        w = model_windows(rec, run.inputs.model, cfg.max_windows)
        run.say(f"  per-cell contributions on up to {cfg.typing_windows} windows, clustering")
        tree = cell_types_primary(run.inputs.model, w, contrib, {l: modes[l] for l in cfg.layers},
                                  {l: modes[f"{l}_activation"] for l in cfg.layers}, rates, true_types=truth,
                                  random_state=cfg.random_state, device=cfg.device, layers=cfg.layers,
                                  max_windows=cfg.typing_windows, progress=cfg.progress)
        tree.attrs.update(run.attrs("types"))
        tree["model_rate"] = rates
        write_netcdf_atomic(tree, path)
        root = tree.to_dataset()
        ari = f", ARI vs truth {float(root['ari_truth']):.2f}" if "ari_truth" in root else ""
        run.say(f"  {int(root['chosen_k'])} cell types{ari}; best features: {root.attrs.get('winner', '?')}")
        return [path]

    return run.step("types", compute, _open_tree(path))


def stage_experiments(run: Run, contrib: xr.DataTree, modes: dict[str, xr.Dataset],
                      inter: xr.Dataset | None) -> xr.Dataset:
    """Silencing experiments: each mode's channels and each recorded interneuron (its direction and,
    as the control, its matched channel); blind spots from the direction fits and the model's fit."""
    from retcodec.analysis.evaluation import evaluate
    from retcodec.analysis.experiments import experiments, summary
    from retcodec.analysis.interneuron_directions import map_interneurons
    from retcodec.analysis.rates import model_rates
    from retcodec.io.recordings import model_windows
    from retcodec.io.truth import read_truth

    cfg, path = run.cfg, run.path("experiments")

    def compute() -> list[Path]:
        rec = run.inputs.recording
        w = model_windows(rec, run.inputs.model, cfg.max_windows)
        truth = read_truth(run.inputs.recording_path)
        has_effects = truth is not None and any(v in truth for v in ("effect", "silencing_effect"))
        run.say(f"  silencing on {cfg.experiment_windows} windows"
                + ("; scoring against the circuit's true silencing effects" if has_effects else ""))
        types = rec["cell_type"].values if "cell_type" in rec.coords else None
        directions = None
        if inter is not None and run.inputs.interneuron_paths and cfg.interneuron_directions:
            run.say("  mapping each recorded interneuron to a direction of the hidden activity")
            directions = map_interneurons(run.inputs.model, [str(p) for p in run.inputs.interneuron_paths], inter,
                                          layers=cfg.layers, n_shifts=cfg.interneuron_shifts,
                                          random_state=cfg.random_state, max_windows=cfg.interneuron_windows,
                                          device=cfg.device)
            release_memory(collect=True)             # the interneuron recordings read for the mapping
        fit = evaluate(run.inputs.model, rec, device=cfg.device, prediction=model_rates(contrib))
        ds = experiments(run.inputs.model, w, modes=modes, interneurons=inter,
                         truth=truth if has_effects else None, cell_types=types,
                         max_windows=cfg.experiment_windows, random_state=cfg.random_state,
                         device=cfg.device, progress=cfg.progress, directions=directions, fit_quality=fit)
        if inter is not None and run.inputs.ensemble_paths:
            ds = _with_ensemble(run, ds, truth if has_effects else None)
        ds.attrs.update(run.attrs("experiments"))
        stim = str(rec.attrs.get("stim_type", "")).replace("naturalscene", "natural-scene movie")
        ds.attrs["stimulus"] = f"the {stim} stimulus of the recording" if stim else "the recording's stimulus"
        write_netcdf_atomic(ds, path)
        numbers = summary(ds)
        run.say("  " + ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}"
                                 for k, v in numbers.items()))
        return [path]

    return run.step("experiments", compute, _open_dataset(path))


def _with_ensemble(run: Run, ds: xr.Dataset, truth: xr.Dataset | None) -> xr.Dataset:
    """The experiments with the ensemble's prediction (:func:`retcodec.analysis.ensemble.add_ensemble`)."""
    from retcodec.analysis.ensemble import add_ensemble
    from retcodec.io.models import load_model

    cfg, paths = run.cfg, run.inputs.ensemble_paths
    run.say(f"  ensemble of {len(paths) + 1} models: the primary and {', '.join(p.name for p in paths)}")
    members = [(p.name, load_model(p, device=cfg.device)) for p in paths]
    return add_ensemble(ds, members, run.inputs.recording, [str(p) for p in run.inputs.interneuron_paths],
                        cfg.layers, max_windows=cfg.max_windows, experiment_windows=cfg.experiment_windows,
                        match_windows=cfg.interneuron_windows, truth=truth, random_state=cfg.random_state,
                        device=cfg.device, say=run.say)


def stage_irfs(run: Run, contrib: xr.DataTree, modes: dict[str, xr.Dataset]) -> xr.DataTree:
    """Instantaneous receptive fields per combination of active modes."""
    from retcodec.analysis.combinations import combination_irfs, mode_combinations
    from retcodec.analysis.rates import model_rates
    from retcodec.io.recordings import model_windows

    cfg, path = run.cfg, run.path("irfs")

    def compute() -> list[Path]:
        rates = model_rates(contrib)
        w = model_windows(run.inputs.recording, run.inputs.model, cfg.max_windows)
        nodes: dict[str, xr.Dataset] = {"/": xr.Dataset(attrs=run.attrs("irfs"))}
        for layer in cfg.layers:
            run.say(f"  {layer}: IRFs of up to {cfg.irf_sets} mode combinations")
            loadings = modes[layer]["loadings"].load()
            combos = mode_combinations(loadings, max_sets=cfg.irf_sets, min_count=2)
            res = combination_irfs(run.inputs.model, w, loadings, rates, combos, random_state=cfg.random_state,
                                   max_times_per_set=cfg.irf_times_per_set, device=cfg.device,
                                   progress=cfg.progress, mean_irf=False)
            nodes[f"/{layer}"] = res
            nodes[f"/{layer}/combinations"] = combos
        write_netcdf_atomic(xr.DataTree.from_dict(nodes), path)
        return [path]

    return run.step("irfs", compute, _open_tree(path))


def stage_interneurons(run: Run) -> xr.Dataset | None:
    """Model units vs interneuron recordings: held-out best unit, chance from circular shifts."""
    from retcodec.analysis.interneuron_match import match_interneurons
    from retcodec.analysis.interneuron_null import exact_shift_null
    from retcodec.insilico.labels import insilico_unit_types

    path = run.path("interneurons")
    if not run.inputs.interneuron_paths:
        run.say("[interneurons] skipped (no interneuron files given)")
        return None
    cfg = run.cfg

    def compute() -> list[Path]:
        unit_types = insilico_unit_types(run.inputs.recording, run.inputs.model, cfg.layers, device=cfg.device)
        release_memory(collect=True)      # the circuit's maps are not needed any more
        match = match_interneurons(run.inputs.model, [str(p) for p in run.inputs.interneuron_paths],
                                   layers=cfg.layers, random_state=cfg.random_state, device=cfg.device,
                                   n_shifts=cfg.interneuron_shifts, unit_types=unit_types,
                                   max_windows=cfg.interneuron_windows, progress=cfg.progress)
        release_memory(collect=True)      # the match's correlation sums are not needed any more
        run.say("  exact circular-shift null of each chosen unit (every shift of the recording)")
        null = exact_shift_null(run.inputs.model, [str(p) for p in run.inputs.interneuron_paths], match,
                                device=cfg.device)
        match = match.assign(null.data_vars)
        match.attrs.update(null.attrs)
        match.attrs.update(run.attrs("interneurons"))
        write_netcdf_atomic(match, path)
        rate = match.attrs.get("type_match_rate")
        run.say(f"  median held-out r = {float(np.nanmedian(match['heldout_correlation'])):.2f} "
                f"(chance p95 median {float(np.nanmedian(match['chance_p95'])):.2f})"
                + (f", best-unit type matches truth for {rate:.0%}" if rate is not None else ""))
        return [path]

    return run.step("interneurons", compute, _open_dataset(path))


def stage_statistics(run: Run, contrib: xr.DataTree) -> xr.Dataset:
    """Sparsity, E/I correlation, dimensionality (with intervals over windows), fit quality and completeness."""
    from retcodec.analysis.evaluation import FIT_METRICS, evaluate
    from retcodec.analysis.layer_trends import layer_trends
    from retcodec.analysis.rates import model_rates
    from retcodec.analysis.statistics import layer_statistics
    from retcodec.analysis.uncertainty import median_intervals

    path = run.path("statistics")

    def compute() -> list[Path]:
        stats = layer_statistics(contrib)
        # the contributions hold the model's rates on the analysed windows: no second forward pass
        ev = evaluate(run.inputs.model, run.inputs.recording, device=run.cfg.device,
                      prediction=model_rates(contrib))
        ev = ev.rename({k: f"fit_{k}" for k in ev.data_vars})
        trends = layer_trends(contrib, random_state=run.cfg.random_state)
        fit_intervals = median_intervals(ev, [f"fit_{k}" for k in FIT_METRICS],
                                         where=ev["fit_reliable"] if "fit_reliable" in ev else None,
                                         random_state=run.cfg.random_state).rename("fit_median_interval")
        fit_intervals = fit_intervals.rename({"variable": "fit_metric", "statistic": "fit_statistic"})
        ds = xr.merge([stats, ev, trends, fit_intervals], combine_attrs="drop")
        ds.attrs.update(run.attrs("statistics"))
        ds.attrs.update({f"fit_{k}": v for k, v in ev.attrs.items()})
        comp = contrib.to_dataset().get("completeness_error")
        if comp is not None:
            ds["completeness_error"] = comp
        write_netcdf_atomic(ds, path)
        return [path]

    return run.step("statistics", compute, _open_dataset(path))


def stage_figures(run: Run, contrib: xr.DataTree, modes: dict[str, xr.Dataset], types: xr.DataTree,
                  irfs: xr.DataTree, inter: xr.Dataset | None, stats: xr.Dataset,
                  exp: xr.Dataset | None = None) -> list[Path]:
    """The figures of this run (PNG and SVG); only these are embedded in the report."""
    import matplotlib.pyplot as plt

    from retcodec.analysis.ablation import ablation_curves
    from retcodec.analysis.rates import model_rates
    from retcodec.modes.sweep import ROBUST_STABILITY
    from retcodec.report import figures as fg

    folder = run.path("figures")

    def compute() -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        rates = model_rates(contrib)
        written: list[Path] = []

        formats = ("png",) if run.cfg.quick else ("png", "svg")      # quick: no vector copies

        def save(make: Callable[[], Any], name: str) -> None:
            run.say(f"  {name}")
            fig = make()
            written.extend(fg.save_figure(fig, folder / name, formats=formats))
            plt.close(fig)

        layers = run.cfg.layers
        rec = run.inputs.recording
        cell_types = rec["cell_type"] if "cell_type" in rec.coords else None
        primary = types.to_dataset()["cluster"] if "cluster" in types.to_dataset() else None
        if primary is not None and "drive_profile" in types.to_dataset():
            save(lambda: fg.plot_cell_types(types), "types_primary")
        t = contrib[layers[0]]["time"].values
        n = min(len(t), 1000)
        for layer in layers:
            node = contrib[layer].to_dataset()
            save(lambda: fg.plot_contribution_heatmap(node, rates, modes[layer]["loadings"],
                                                      time_slice=(t[0], t[n - 1]), cell_types=cell_types,
                                                      target=str(contrib.attrs.get("target", "surprisal")),
                                                      stimulus=rec["stimulus"]),
                 f"contributions_{layer}")
            save(lambda: fg.plot_modes(modes[layer]["modes"], layer=layer, energy=modes[layer].get("energy"),
                                       fitted=modes[layer].attrs.get("sign")), f"modes_{layer}")
            control = f"controls/surprisal_modes/{layer}"
            if _has_node(types, control):
                tnode = types[control].to_dataset()
                save(lambda: fg.plot_mode_cell_matrix(tnode["correlation"], primary, None, cell_types, layer=layer),
                     f"cell_types_{layer}")
            inode = irfs[layer].to_dataset()
            if "spatial" in inode and inode.sizes.get("combination", 0):
                save(lambda: fg.plot_irf_filters(inode["spatial"], inode["temporal"], modes=modes[layer]["modes"],
                                                 cell_types=cell_types, layer=layer), f"irfs_{layer}")
        sweeps = load_mode_sweeps(run)
        if sweeps:
            save(lambda: fg.plot_mode_sweep(sweeps, robust_stability=ROBUST_STABILITY), "modes_sweep")
        if inter is not None:
            save(lambda: fg.plot_interneuron_matches(inter), "interneurons")
        save(lambda: fg.plot_sparsity(stats), "sparsity")
        if "trend" in stats:
            save(lambda: fg.plot_layer_trends(stats), "layer_trends")
        if exp is not None and "member_effect" in exp:
            save(lambda: fg.plot_ensemble_predictions(exp), "ensemble")
        if exp is not None and "ratio" in exp:
            save(lambda: fg.plot_ablation_curves(ablation_curves(exp, random_state=run.cfg.random_state)),
                 "ablation")
        view = _stimulus_view(run, rates, modes, irfs)
        save(lambda: fg.plot_stimulus_view(view, irfs={l: irfs[l].to_dataset() for l in layers}),
             "stimulus_view")
        tables = _layer_tables(types, layers)
        if tables:
            save(lambda: fg.plot_layer_agreement(tables), "layer_agreement")
        for layer in layers:
            meis = _mode_meis(run, contrib, modes, layer)
            if meis:
                save(lambda: fg.plot_meis(meis, title=layer), f"meis_{layer}")
        ev = stats[[v for v in stats.data_vars if v.startswith("fit_")]]
        ev = ev.rename({v: v[4:] for v in ev.data_vars})
        save(lambda: fg.plot_fit_quality(ev), "fit_quality")
        return [Path(p) for p in written]

    return run.step("figures", compute, lambda: run.cache.files("figures"))


def _mode_meis(run: Run, contrib: xr.DataTree, modes: dict[str, xr.Dataset], layer: str) -> dict[str, xr.Dataset]:
    """Each mode's most-exciting input for the run's surprisal target (empty without its parameters)."""
    from retcodec.analysis.mei import most_exciting_input
    from retcodec.engine.targets import Surprisal
    from retcodec.report.figstyle import mode_names

    root = contrib.to_dataset()
    model = run.inputs.model
    shape = tuple(int(v) for v in getattr(model, "img_shape", ()))
    if "surprisal_mean" not in root or "surprisal_cov" not in root or len(shape) != 3:
        return {}
    target = Surprisal(root["surprisal_mean"].values, root["surprisal_cov"].values)
    weights = modes[layer]["modes"]
    names = mode_names(weights)
    return {f"mode {m} ({name})": most_exciting_input(model, layer, weights.isel(mode=i), target, shape,
                                                      random_state=run.cfg.random_state, device=run.cfg.device)
            for i, (m, name) in enumerate(zip(weights["mode"].values, names))}


def _stimulus_view(run: Run, rates: xr.DataArray, modes: dict[str, xr.Dataset], irfs: xr.DataTree) -> xr.Dataset:
    """The stretch of the stimulus-aligned figure (the one with most IRF moments)."""
    from retcodec.analysis.stimulus_view import stimulus_view

    rec, layers = run.inputs.recording, run.cfg.layers
    combos = {l: irfs[f"{l}/combinations"].to_dataset()["combination_label"] for l in layers
              if _has_node(irfs, f"{l}/combinations")}
    return stimulus_view(rec["stimulus"], rates, {l: modes[l]["loadings"] for l in layers},
                         recorded_rate=rec["rate"] if "rate" in rec else None,
                         irfs={l: irfs[l].to_dataset() for l in layers}, combinations=combos,
                         cell_types=rec["cell_type"].values if "cell_type" in rec.coords else None)


#: feature families whose per-layer clusterings the layer-agreement figure compares (node, title)
LAYER_FAMILIES = (("drive", "drive profiles"), ("controls/surprisal_modes", "surprisal-mode correlations"))


def _layer_tables(types: xr.DataTree, layers: tuple[str, ...] | list[str]) -> dict[str, xr.DataArray]:
    """Contingency tables of the first two layers' clusterings, per feature family present."""
    from retcodec.analysis.agreement import contingency

    if len(layers) < 2:
        return {}
    first, second = layers[0], layers[1]
    tables = {}
    for node, title in LAYER_FAMILIES:
        a, b = f"{node}/{first}", f"{node}/{second}"
        if _has_node(types, a) and _has_node(types, b) and "cluster" in types[a].dataset \
                and "cluster" in types[b].dataset:
            tables[title] = contingency(types[a].dataset["cluster"].values, types[b].dataset["cluster"].values,
                                        names=(first, second))
    return tables


def stage_report(run: Run, results: dict[str, Any]) -> Path:
    """The self-contained HTML report and ``hypotheses.txt``."""
    from retcodec.report.html import write_report

    path = run.path("report")

    def compute() -> list[Path]:
        report = write_report(run, {**results, "mode_sweeps": load_mode_sweeps(run)})
        return [report, run.out / "hypotheses.txt"]

    # the report shows every stage's time, so it is rebuilt whenever anything was recomputed
    return run.step("report", compute, lambda: path)

"""The ``retcodec`` command line.

``retcodec run`` analyses the bundled default (or ``--model``/``--data``) end to
end; the other subcommands run single stages so that a lab can run pieces on a
cluster. ``retcodec <command> --help`` lists every option.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from retcodec._version import __version__
from retcodec.defaults import DEVICE, LAYERS, METHODS, RANDOM_STATE, STEPS
from retcodec.errors import ConfigurationError, RetcodecError

__all__ = ["build_parser", "main"]


def _add_model_data(p: argparse.ArgumentParser, data_required: bool = False) -> None:
    p.add_argument("--model", type=Path, help="checkpoint in the published layout, or an openretina Lightning .ckpt (default: bundled in-silico model)")
    p.add_argument("--data", type=Path, required=data_required,
                   help="recording file <root>/<expt>/<stim>.h5 or a data root (default: bundled in-silico data)")
    p.add_argument("--experiment", help="experiment folder under a data root (default: the model's dataset)")
    p.add_argument("--stim-type", help="stimulus file stem (default: the model's stim_type)")
    p.add_argument("--device", default=DEVICE, help=f"torch device, e.g. cpu or cuda (default: {DEVICE})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retcodec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"retcodec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")

    p = sub.add_parser("run", help="the whole analysis: contributions -> modes -> cell types -> IRFs -> "
                                   "interneurons -> statistics -> figures -> report")
    _add_model_data(p)
    p.add_argument("--session", help="openretina checkpoints (.ckpt): the session (readout data_key) to analyse; "
                                      "its recording is <data>/ganglion_cell_data/<session>/<stim>.h5")
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: ./results)")
    p.add_argument("--layers", default=",".join(LAYERS),
                   help=f"comma-separated hidden layers (default: {','.join(LAYERS)})")
    p.add_argument("--steps", type=int, default=STEPS, help=f"integration steps (default: {STEPS})")
    p.add_argument("--method", default=METHODS[0], choices=METHODS)
    p.add_argument("--seed", type=int, default=RANDOM_STATE, help="random seed of every stage")
    p.add_argument("--workers", type=int, default=0, help="dask workers for contributions (0: serial)")
    p.add_argument("--interneurons", type=Path, nargs="*",
                   help="interneuron files or folders (default: the bundled ones; give none to skip)")
    p.add_argument("--max-windows", type=int, default=None, help="analyse only the first N test windows")
    p.add_argument("--quick", action="store_true",
                   help="a complete but rougher report in about a minute (fewer windows and shifts)")
    p.add_argument("--mode-sweep", action="store_true",
                   help="also run the modes' robustness sweep (threshold, dictionary size, L1, seed; a few "
                        "minutes) and show it in the report")
    p.add_argument("--directions", action="store_true",
                   help="also map each recorded interneuron to a direction of both hidden layers and silence "
                        "it as that direction (a scored alternative to the single matched channel; ~25 s)")
    p.add_argument("--ensemble", nargs="*", type=Path, default=None, metavar="MODEL",
                   help="extra ensemble members (checkpoints fitted to the same cells) for the silencing "
                        "predictions; default: <model>_m1.pt, <model>_m2.pt, ... beside the model when present "
                        "(retcodec fit --members); give no file to use the model alone")
    p.add_argument("--force", action="store_true", help="recompute finished stages")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("contributions", help="stage 1: contributions to the surprisal target (netCDF)")
    _add_model_data(p)
    p.add_argument("--out", type=Path, required=True, help="output file, e.g. contributions.nc")
    p.add_argument("--layers", default=",".join(LAYERS))
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--method", default=METHODS[0], choices=METHODS)
    p.add_argument("--target", default="surprisal", help="surprisal, sum, or cell:<id>")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--scheduler", help="dask scheduler address (default: a LocalCluster)")
    p.add_argument("--max-windows", type=int, default=None)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("modes", help="stage 2: sparse contribution modes per layer")
    p.add_argument("contributions", type=Path, help="contributions.nc from `retcodec contributions`")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sign", default="pos", choices=["pos", "both"],
                   help="fit C+ only (the paper) or the magnitudes [|C-|, C+] (E and I)")
    p.add_argument("--seed", type=int, default=RANDOM_STATE)
    p.add_argument("--sweep", action="store_true",
                   help="also refit with threshold 0.5/0.7/0.9, dictionary 1/3/5 x channels, dictionary L1 "
                        "0/1e-4/1e-2 and seeds 0-4, and store how the modes change in <out stem>_sweep.nc")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("types", help="stage 3: cluster cells by the modes that drive them")
    p.add_argument("contributions", type=Path)
    p.add_argument("modes", type=Path)
    p.add_argument("--model", type=Path)
    p.add_argument("--data", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=RANDOM_STATE)

    p = sub.add_parser("irf", help="instantaneous receptive fields of chosen cells and times")
    _add_model_data(p)
    p.add_argument("--cells", help="comma-separated cell ids (default: all)")
    p.add_argument("--times", help="window positions, e.g. 0:500:10 or 3,17,42 (default: all, needs --out)")
    p.add_argument("--out", type=Path, required=True, help="netCDF file for the IRFs")

    p = sub.add_parser("fit", help="fit the published VaryModel layout to a recording")
    p.add_argument("--data", type=Path, required=True, help="recording file or data root")
    p.add_argument("--experiment")
    p.add_argument("--stim-type")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (published layout)")
    p.add_argument("--recipe", default="bundled", choices=("bundled", "family", "quick"),
                   help="fitting recipe (retcodec.fitting.RECIPES; default: bundled, the bundled models' own)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=RANDOM_STATE)
    p.add_argument("--members", type=int, default=1,
                   help="fit an ensemble of this many models (seeds seed..seed+N-1, each holding out another "
                        "validation block); member k > 0 is written beside --out as <stem>_m<k>.pt")
    p.add_argument("--device", default=DEVICE)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("evaluate", help="per-cell test correlation, FEVE and repeat ceiling")
    _add_model_data(p)
    p.add_argument("--out", type=Path, help="optional netCDF output")

    p = sub.add_parser("simulate", help="write the in-silico retina's recordings in the published layouts")
    p.add_argument("--version", type=int, default=2, choices=(1, 2, 3),
                   help="circuit version (2: the bundled retina; 1: the 0.1 retina; 3: the benchmark "
                        "family's retina of --seed)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=RANDOM_STATE)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("regenerate", help="simulate + fit + evaluate the bundled default from scratch")
    p.add_argument("--work", type=Path, default=Path("work/regenerate"))
    p.add_argument("--seed", type=int, default=RANDOM_STATE)
    p.add_argument("--no-bundle", action="store_true", help="do not copy into datasets/ and models/")
    p.add_argument("--device", default=DEVICE)
    p.add_argument("--quiet", action="store_true")
    p = sub.add_parser("benchmark", help="score every method against the truth of a family of in-silico "
                                         "retinas (simulate, fit, run, score; resumable)")
    p.add_argument("--out", type=Path, default=Path("benchmark"), help="benchmark folder (default: ./benchmark)")
    p.add_argument("--split", default="test", choices=("tuning", "test"),
                   help="retina seeds: 'tuning' (method choices) or 'test' (reported claims) (default: test)")
    p.add_argument("--retinas", type=int, default=12, help="number of retinas: the first N seeds of the split")
    p.add_argument("--seeds", type=int, nargs="+", help="explicit retina seeds (instead of --split/--retinas)")
    p.add_argument("--quick", action="store_true",
                   help="the quick family: small retinas, short recordings, one-epoch fits (for CI)")
    p.add_argument("--workers", type=int, default=0, help="dask worker processes, one retina each (0: serial)")
    p.add_argument("--members", type=int, default=1,
                   help="models fitted per retina: > 1 makes an ensemble for the silencing predictions "
                        "(each member costs one more fit)")
    p.add_argument("--device", default=DEVICE)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("classifier", help="CODEC on an image classifier: contributions, modes, "
                                          "class correlation, ablation controls, report")
    p.add_argument("--model", required=True,
                   help="TorchScript file or 'package.module:factory' returning the nn.Module")
    p.add_argument("--weights", type=Path, help="state_dict file to load into an entry-point model")
    p.add_argument("--images", type=Path, required=True,
                   help="folder tree <class_name>/*.jpg, or a .npz with x (n, C, H, W) and y (n,)")
    p.add_argument("--layers", required=True, help="comma-separated dotted module names, e.g. layer3.1,layer4")
    p.add_argument("--out", type=Path, required=True, help="results folder")
    p.add_argument("--target", default="top_logit", help="top_logit, top_margin, softmax_entropy, "
                                                         "topk:<k> or class:<index> (default: top_logit)")
    p.add_argument("--steps", type=_steps, default=10,
                   help="integration steps, or 'auto' (refined per image until complete to 1%%; "
                        "deep networks need it) (default: 10)")
    p.add_argument("--normalization", default=None,
                   help="how the model wants [0,1] RGB normalised: imagenet (ImageNet mean/std, the "
                        "default), [-1,1], [0,1] or 'm1,m2,m3/s1,s2,s3'")
    p.add_argument("--superclasses", type=Path, help="JSON mapping class name -> super-class")
    p.add_argument("--resize", type=int, default=256, help="folder images: shorter side (default 256)")
    p.add_argument("--crop", type=int, default=224, help="folder images: centre crop (default 224)")
    p.add_argument("--max-per-class", type=int, default=None, help="folder images: first N per class")
    p.add_argument("--max-epochs", type=int, default=300, help="mode fitting epochs (default 300)")
    p.add_argument("--seed", type=int, default=RANDOM_STATE)
    p.add_argument("--device", default=DEVICE)
    p.add_argument("--quiet", action="store_true")
    return parser


def _resolve_inputs(args: argparse.Namespace, split: str = "test"):
    """(model, recording) from --model/--data/--experiment/--stim-type, bundled by default."""
    from retcodec.io.bundled import default_model_path
    from retcodec.io.models import load_model
    from retcodec.io.recordings import load_recording

    model_path = args.model or default_model_path()
    model = load_model(model_path, device=args.device)
    data = args.data
    if data is None:
        from retcodec.io.bundled import default_data_root
        data = default_data_root()
    data = Path(data)
    if data.is_dir():
        experiment = args.experiment or model.meta.get("dataset")
        stim_type = args.stim_type or model.meta.get("stim_type")
        rec = load_recording(data, split=split, experiment=experiment, stim_type=stim_type,
                             cells=model.meta.get("cells"))
    else:
        rec = load_recording(data, split=split, cells=model.meta.get("cells"))
    return model, rec, model_path


def _cmd_fit(args: argparse.Namespace) -> int:
    from retcodec.analysis.evaluation import evaluate, format_evaluation
    from retcodec.fitting import fit_ensemble, member_paths, recipe
    from retcodec.io.recordings import load_recording

    kw = {k: v for k, v in dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr).items() if v is not None}
    loc = dict(experiment=args.experiment, stim_type=args.stim_type) if args.data.is_dir() else {}
    train = load_recording(args.data, split="train", **loc)
    test = load_recording(args.data, split="test", **loc)
    config = recipe(args.recipe, seed=args.seed, **kw)
    fitted = fit_ensemble(train, args.members, test=test, out=args.out, device=args.device,
                          progress=not args.quiet, config=config)
    for (model, _), path in zip(fitted, member_paths(args.out, args.members)):
        print(format_evaluation(evaluate(model, test, device=args.device)))
        print(f"wrote {path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from retcodec.analysis.evaluation import evaluate, format_evaluation
    from retcodec.io.storage import check_output_file, write_netcdf_atomic

    if args.out:                          # before any work; never over a file retcodec did not write
        args.out = check_output_file(args.out, "--out", own_only=True)
    model, rec, _ = _resolve_inputs(args)
    ev = evaluate(model, rec, device=args.device)
    print(format_evaluation(ev))
    if args.out:
        write_netcdf_atomic(ev, args.out)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from retcodec.insilico.regenerate import simulate_version
    from retcodec.io.storage import check_output_folder

    out = check_output_folder(args.out, "--out")
    for name, path in simulate_version(out, args.seed, args.version, progress=not args.quiet).items():
        print(f"{name}: {path}")
    return 0


def _cmd_regenerate(args: argparse.Namespace) -> int:
    import json

    from retcodec.insilico.regenerate import regenerate

    summary = regenerate(args.work, seed=args.seed, bundle=not args.no_bundle, device=args.device,
                         progress=not args.quiet)
    print(json.dumps({k: summary[k] for k in ("evaluation", "timings")}, indent=2))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from retcodec.pipeline.run import run

    inter = args.interneurons
    summary = run(args.model, args.data, experiment=args.experiment, stim_type=args.stim_type,
                  session=args.session, out=str(args.out), layers=args.layers, steps=args.steps, method=args.method,
                  device=args.device, random_state=args.seed, workers=args.workers,
                  interneurons=None if inter is None else tuple(map(str, inter)),
                  max_windows=args.max_windows, quick=args.quick, force=args.force, progress=not args.quiet,
                  mode_sweep=args.mode_sweep, interneuron_directions=args.directions,
                  ensemble=None if args.ensemble is None else tuple(map(str, args.ensemble)))
    print(f"results in {summary['out']}; open {summary['report']}")
    return 0


def _parse_target(spec: str, model) -> object:
    """``surprisal``, ``sum`` or ``cell:<id>`` -> a target the engine accepts."""
    from retcodec.engine.targets import CellRate

    if spec.startswith("cell:"):
        value = spec.split(":", 1)[1]
        try:
            cell = int(value)
        except ValueError:
            raise ConfigurationError(f"--target cell:<id> needs an integer cell id, got {value!r}") from None
        return CellRate(cell, cells=model.meta.get("cells"))
    if spec == "sum":
        return "sum_of_rates"
    if spec != "surprisal":
        raise ConfigurationError(f"--target must be surprisal, sum or cell:<id>, got {spec!r}")
    return spec


def _cmd_contributions(args: argparse.Namespace) -> int:
    from retcodec.engine.contributions import contributions
    from retcodec.io.locking import hold_lock
    from retcodec.io.recordings import model_windows
    from retcodec.io.storage import check_output_file

    out = check_output_file(args.out, "--out", own_only=True)
    if args.workers < 0:
        raise ConfigurationError(f"--workers must be 0 (serial) or a positive number, got {args.workers}")
    model, rec, _ = _resolve_inputs(args)
    target = _parse_target(args.target, model)
    w = model_windows(rec, model, args.max_windows)
    kw: dict = {}
    if args.workers or args.scheduler:
        kw.update(backend="dask", n_workers=args.workers or 2, scheduler=args.scheduler)
    with hold_lock(out.with_name(out.name + ".lock"), f"output {out}"):
        contributions(model, w, layers=_split(args.layers), method=args.method, steps=args.steps,
                      target=target, device=args.device, out=out, progress=not args.quiet, **kw)
    print(f"wrote {out}")
    return 0


def _split(spec: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ConfigurationError(f"--layers must name at least one layer, got {spec!r}")
    return names


def _open_results(path: Path, what: str, needs: str):
    """Open a results file of retcodec (a DataTree), with a clear error when it is not one."""
    import xarray as xr

    from retcodec.errors import MissingDataError

    if not path.is_file():
        raise MissingDataError(f"{what} {path} does not exist (or is not a file)")
    try:
        tree = xr.open_datatree(path, engine="h5netcdf")
    except Exception as err:  # noqa: BLE001 - any reader failure means: not our file
        raise ConfigurationError(f"{what} {path} is not a netCDF/HDF5 file retcodec can read ({err}); "
                                 f"give {needs}") from None
    return tree


def _cmd_modes(args: argparse.Namespace) -> int:
    import json

    from retcodec.io.storage import check_output_file
    from retcodec.modes import ContributionModes, fit_layer, layer_matrix, save_modes
    from retcodec.modes.sweep import robustness_sweep

    out = check_output_file(args.out, "--out", own_only=True)
    tree = _open_results(args.contributions, "contributions file",
                         "the contributions.nc written by `retcodec contributions` or `retcodec run`")
    layers = [name for name in tree.children if "contribution" in tree[name].to_dataset()]
    if not layers:
        raise ConfigurationError(f"{args.contributions} holds no layer with a 'contribution' variable; give "
                                 f"the contributions.nc written by `retcodec contributions`")
    result, sweeps = {}, {}
    for layer in layers:
        contribution = tree[layer]["contribution"].load()
        estimator = ContributionModes(random_state=args.seed, sign=args.sign)
        ds = fit_layer(estimator, contribution, sign=args.sign, layer=layer)
        result[layer] = ds
        print(f"{layer}: {ds.sizes['mode']} modes, R2 = {float(ds['r2']):.3f}, L0 = {ds.attrs['l0']:.2f} "
              f"(no active mode in {100 * ds.attrs['fraction_none']:.1f} % of bins)")
        if args.sweep:
            say = (lambda message: None) if args.quiet else (lambda message: print(f"  {layer}: {message}"))
            sweep = robustness_sweep(estimator, layer_matrix(contribution, args.sign)[0], progress=say)
            sweep.attrs["layer"] = layer
            sweeps[layer] = sweep
            for name, v in json.loads(sweep.attrs["verdict"]).items():
                print(f"  {name}: {'robust' if v['robust'] else 'NOT robust'} (worst stability "
                      f"{v['worst_stability']:.3f} at {v['worst_value']}, lowest R2 {v['lowest_r2']:.3f})")
    save_modes(result, out)
    print(f"wrote {out}")
    if sweeps:
        sweep_out = out.with_name(out.stem + "_sweep" + out.suffix)
        save_modes(sweeps, sweep_out)
        print(f"wrote {sweep_out}")
    return 0


def _cmd_types(args: argparse.Namespace) -> int:
    from retcodec.analysis.celltypes import cell_types
    from retcodec.analysis.rates import model_rates
    from retcodec.io.storage import check_output_file, write_netcdf_atomic
    from retcodec.modes import load_modes

    out = check_output_file(args.out, "--out", own_only=True)
    tree = _open_results(args.contributions, "contributions file",
                         "the contributions.nc written by `retcodec contributions` or `retcodec run`")
    _open_results(args.modes, "modes file", "the modes.nc written by `retcodec modes` or `retcodec run`")
    modes = load_modes(args.modes)
    if not isinstance(modes, dict):
        modes = {"layer": modes}
    loadings = {k: v["loadings"] for k, v in modes.items() if not k.endswith("_activation")}
    res = cell_types(loadings, model_rates(tree), random_state=args.seed)
    write_netcdf_atomic(res, out)
    print(f"wrote {out}")
    return 0


def _parse_cells(spec: str | None) -> list[int] | None:
    if not spec:
        return None
    try:
        return [int(c) for c in spec.split(",") if c.strip()]
    except ValueError:
        raise ConfigurationError(f"--cells must be comma-separated integer cell ids, got {spec!r}") from None


def _parse_times(spec: str, n: int) -> list[int]:
    """``"a:b:s"`` or ``"i,j,k"`` -> window positions."""
    try:
        if ":" in spec:
            parts = [int(p) if p else None for p in spec.split(":")]
            return list(range(n))[slice(*parts)]
        return [int(p) for p in spec.split(",")]
    except (ValueError, TypeError):
        raise ConfigurationError(f"--times must look like 0:500:10 or 3,17,42, got {spec!r}") from None


def _cmd_irf(args: argparse.Namespace) -> int:
    from retcodec.analysis.irf import irf
    from retcodec.io.recordings import model_windows
    from retcodec.io.storage import check_output_file, write_netcdf_atomic

    out = check_output_file(args.out, "--out", own_only=True)
    cells = _parse_cells(args.cells)
    model, rec, _ = _resolve_inputs(args)
    w = model_windows(rec, model)
    times = _parse_times(args.times, len(w)) if args.times else None
    res = irf(model, w, cells=cells, times=times, device=args.device, out=out, progress=True)
    if not out.exists():
        write_netcdf_atomic(res.to_dataset(name="irf"), out)
    print(f"wrote {out}")
    return 0


def _steps(value: str) -> int | str:
    """``--steps``: a positive integer or ``auto``."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"steps must be an integer or 'auto', got {value!r}") from None


def _classifier_target(spec: str) -> object:
    """``--target``: a target name, ``topk:<k>`` (k >= 1) or ``class:<index>`` (index >= 0)."""
    from retcodec.engine.targets import ClassLogit, TopKLogits

    kind, sep, value = spec.strip().partition(":")
    if not sep:
        return spec.strip()
    makers = {"topk": (TopKLogits, 1, "the number of top logits"), "class": (ClassLogit, 0, "a class index")}
    if kind not in makers:
        raise ConfigurationError(f"--target {spec!r}: unknown kind {kind!r}; use top_logit, top_margin, "
                                 f"softmax_entropy, topk:<k> or class:<index>")
    make, low, meaning = makers[kind]
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigurationError(f"--target {spec!r}: after '{kind}:' give {meaning} (a whole number "
                                 f">= {low}), e.g. {kind}:{max(low, 5)}") from None
    if number < low:
        raise ConfigurationError(f"--target {spec!r}: {meaning} must be >= {low}")
    return make(number)


def _cmd_classifier(args: argparse.Namespace) -> int:
    import json

    from retcodec.classifier import as_image_set, load_classifier, load_superclasses, load_weights, run_study

    target = _classifier_target(args.target)
    norm = {"normalization": args.normalization} if args.normalization else {}
    model = load_classifier(args.model, [s for s in args.layers.split(",") if s], device=args.device, **norm)
    if args.weights is not None:
        load_weights(model.net, args.weights)
    images = as_image_set(args.images, resize=args.resize, crop=args.crop,
                          max_per_class=args.max_per_class,
                          normalization=model.normalization) if args.images.is_dir() \
        else as_image_set(args.images)
    supers = load_superclasses(args.superclasses) if args.superclasses else None
    summary = run_study(model, images, args.out, target=target, steps=args.steps, superclasses=supers,
                        seed=args.seed, max_epochs=args.max_epochs, device=args.device,
                        progress=not args.quiet)
    print(json.dumps(summary["layers"], indent=1))
    print(f"wrote {args.out / 'report.html'}")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from retcodec.benchmark import benchmark

    written = benchmark(args.out, split=args.split, retinas=args.retinas, seeds=args.seeds, quick=args.quick,
                        workers=args.workers, device=args.device, progress=not args.quiet, members=args.members)
    print(f"wrote {written['benchmark']} and {written['summary']}")
    return 0


COMMANDS = {"fit": _cmd_fit, "benchmark": _cmd_benchmark, "evaluate": _cmd_evaluate, "simulate": _cmd_simulate,
            "regenerate": _cmd_regenerate, "run": _cmd_run, "contributions": _cmd_contributions,
            "modes": _cmd_modes, "types": _cmd_types, "irf": _cmd_irf,
            "classifier": _cmd_classifier}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        print("\nGive a command; `retcodec run --out results` analyses the bundled default.", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args)
    except RetcodecError as err:
        print(f"retcodec {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"retcodec {args.command}: interrupted; finished outputs are kept, "
              f"rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"retcodec {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:             # a bug in retcodec: still one line, and how to see the rest
        if os.environ.get("RETCODEC_DEBUG"):
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        print(f"retcodec {args.command}: internal error ({type(err).__name__}: {first}); please report it "
              f"(RETCODEC_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())

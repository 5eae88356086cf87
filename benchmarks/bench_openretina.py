"""CODEC on the shipped openretina model beside the Baccus-architecture model, scored against the truth.

    python benchmarks/bench_openretina.py [--quick] [--out DIR] [--api]

Needs ``retcodec[openretina]``. Puts the bundled in-silico recording into the distributed
tree (``<out>/data/ganglion_cell_data/insilico/naturalscene.h5``), then runs
``retcodec run`` (the command line, in a child process) on

* ``models/openretina_insilico.ckpt`` (an openretina ``UnifiedCoreReadout`` trained with
  openretina's own code, ``tools/make_openretina_model.py``), ``--session insilico``;
* ``models/insilico_naturalscene.pt`` (the bundled Baccus-architecture CNN) on the same
  recording;

and prints, for each, the run time, the fit (median test correlation), the cell types'
agreement with the true types (adjusted Rand index) and the silencing predictions'
agreement with the circuit's true silencing effects (Spearman r, sign accuracy).
``--api`` also runs the openretina model through ``retcodec.pipeline.run.run`` in another
folder and checks that every array of every results file is the same.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
RESULT_FILES = ("contributions.nc", "modes.nc", "cell_types.nc", "irfs.nc", "interneurons.nc",
                "experiments.nc", "statistics.nc")


def scores(folder: Path) -> dict:
    """Headline numbers of a results folder."""
    types = xr.open_datatree(folder / "cell_types.nc", engine="h5netcdf").to_dataset()
    exp = xr.open_dataset(folder / "experiments.nc", engine="h5netcdf")
    stats = xr.open_dataset(folder / "statistics.nc", engine="h5netcdf")
    out = {"n_types": int(types["chosen_k"]), "ari_truth": float(types.get("ari_truth", np.nan)),
           "fit_median_correlation": float(np.nanmedian(stats["fit_correlation"].values))
           if "fit_correlation" in stats else None}
    for key in ("spearman", "sign_accuracy", "baseline_spearman", "baseline_sign_accuracy"):
        if key in exp:
            out[f"silencing_{key}"] = float(exp[key])
    inter = folder / "interneurons.nc"
    if inter.exists():
        match = xr.open_dataset(inter, engine="h5netcdf")
        out["interneuron_median_heldout_r"] = float(np.nanmedian(match["heldout_correlation"]))
        if "type_match_rate" in match.attrs:
            out["interneuron_type_match_rate"] = float(match.attrs["type_match_rate"])
    return out


def run_cli(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "retcodec", "run", *args], check=True)
    return time.perf_counter() - t0


def same_results(a: Path, b: Path) -> bool:
    for name in RESULT_FILES:
        if not (a / name).exists():
            continue
        ta, tb = (xr.open_datatree(p / name, engine="h5netcdf") for p in (a, b))
        for node in ta.subtree:
            for var in node.data_vars:
                if not np.array_equal(node[var].values, tb[node.path][var].values, equal_nan=True):
                    print(f"differs: {name} {node.path}/{var}")
                    return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("work/bench_openretina"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--api", action="store_true", help="also run the Python API and compare")
    parser.add_argument("--model", type=Path, default=REPO / "models/openretina_insilico.ckpt")
    args = parser.parse_args(argv)

    from retcodec.io.bundled import default_recording_path
    from retcodec.io.openretina import published_tree

    root = published_tree({"insilico": [default_recording_path("naturalscene")]}, args.out / "data")
    quick = ["--quick"] if args.quick else []
    runs = {
        "openretina": ["--model", str(args.model), "--data", str(root), "--session", "insilico"],
        "baccus_cnn": ["--model", str(REPO / "models/insilico_naturalscene.pt"),
                       "--data", str(default_recording_path("naturalscene"))],
    }
    report = {}
    for name, cli in runs.items():
        folder = args.out / name
        seconds = run_cli([*cli, "--out", str(folder), "--quiet", *quick])
        report[name] = {"seconds": round(seconds, 1), **scores(folder)}
    if args.api:
        from retcodec.pipeline.run import run

        run(str(args.model), str(root), session="insilico", out=str(args.out / "openretina_api"),
            quick=args.quick, progress=False)
        report["openretina"]["api_same_as_cli"] = same_results(args.out / "openretina", args.out / "openretina_api")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

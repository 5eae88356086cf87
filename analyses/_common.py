"""Shared command line of the analysis scripts: where results live, where figures go, and
running the pipeline (``rc.run``) only when it is needed."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr

import retcodec as rc
from retcodec.errors import RetcodecError
from retcodec.report.figures import save_figure


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """``--results --out --model --data --max-windows --run`` for the script ``name``."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results",
                   help="results folder of `retcodec run` (made or completed when files are missing)")
    p.add_argument("--out", default=f"analyses_output/{name}", help="where the figures go")
    p.add_argument("--model", help="model checkpoint (default: the bundled in-silico model)")
    p.add_argument("--data", help="recording file or data root (default: the bundled recording)")
    p.add_argument("--max-windows", type=int, help="analyse only the first N test windows (quick runs)")
    p.add_argument("--run", action="store_true",
                   help="always call rc.run (it recomputes stages made with other parameters); "
                        "by default it is called only when a needed file is missing or "
                        "--model/--data/--max-windows is given")
    return p


def ensure_results(args: argparse.Namespace, needed: list[str]) -> Path:
    """The results folder, after ``rc.run`` (which resumes and skips finished stages) if needed."""
    results = Path(args.results)
    missing = [f for f in needed if not (results / f).exists()]
    asked = args.run or args.model or args.data or args.max_windows is not None
    if missing or asked:
        print(f"running the pipeline into {results}"
              + (f" (missing: {', '.join(missing)})" if missing else ""), flush=True)
        try:
            rc.run(args.model, args.data, out=str(results), max_windows=args.max_windows)
        except RetcodecError as error:          # a missing model or recording: say what to do
            sys.exit(f"error: {error}")
    else:
        print(f"using the finished stages in {results} (pass --run to check or recompute them)")
    return results


def open_tree(results: Path, name: str) -> xr.DataTree:
    return xr.open_datatree(results / name, engine="h5netcdf")


def open_dataset(results: Path, name: str) -> xr.Dataset:
    return xr.open_dataset(results / name, engine="h5netcdf")


def save(fig, out: str | Path, name: str) -> None:
    """Write ``fig`` as ``<out>/<name>.png`` and ``.svg`` and say where."""
    paths = save_figure(fig, Path(out) / name)
    print("wrote " + ", ".join(str(p) for p in paths))


def true_types(ds: xr.Dataset | xr.DataArray) -> np.ndarray | None:
    """The true cell type per cell (in-silico data), from a ``true_type`` or ``cell_type`` coord."""
    for name in ("true_type", "cell_type"):
        if name in ds.coords:
            values = ds[name].values.astype(str)
            return None if (values == "unknown").all() else values
    return None

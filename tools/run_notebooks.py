#!/usr/bin/env python3
"""Execute the tutorial notebooks; exit 1 when any cell of any notebook fails.

    python tools/run_notebooks.py                    # every docs/tutorials/*.ipynb
    python tools/run_notebooks.py docs/tutorials/03_any_torch_model.ipynb
    python tools/run_notebooks.py --out executed/   # also keep the executed copies

Each notebook runs in a fresh kernel (the current Python's ``python3`` kernel, from
ipykernel) inside its own temporary working folder, so whatever it writes lands there,
never in the repository; the committed notebooks are not modified. Needs the ``docs``
extra (nbclient, ipykernel).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"


def notebooks(paths: list[str]) -> list[Path]:
    """The notebooks named, or every ``docs/tutorials/*.ipynb`` (sorted)."""
    found = [Path(p) for p in paths] if paths else sorted(TUTORIALS.glob("*.ipynb"))
    missing = [str(p) for p in found if not p.is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    if not found:
        raise SystemExit(f"no notebooks in {TUTORIALS}")
    return found


def execute(path: Path, timeout: int, out: Path | None) -> tuple[bool, float, str]:
    """Run one notebook; ``(ok, seconds, error text)``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    error = ""
    with tempfile.TemporaryDirectory(prefix=f"nb-{path.stem}-") as work:
        # the kernel sees the repository first on its path, as the tests do
        env_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        os.environ["PYTHONPATH"] = env_path
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": work}})
        try:
            client.execute()
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
            error = str(err)
    seconds = time.perf_counter() - start
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / path.name)
    return not error, seconds, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: docs/tutorials/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    parser.add_argument("--out", type=Path, help="folder for the executed copies")
    args = parser.parse_args(argv)
    failed = []
    for path in notebooks(args.notebooks):
        print(f"running {path.name} ...", flush=True)
        ok, seconds, error = execute(path, args.timeout, args.out)
        print(f"  {'ok' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
        if not ok:
            print(error, file=sys.stderr, flush=True)
            failed.append(path.name)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("every notebook ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())

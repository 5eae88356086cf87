"""Recordings in the distributed layout (ganglion_cell_data/<session>/<stim>.h5), written by the tests."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

WIDTHS = (5, 10, 20)
N_CELLS, N_REP, H = 3, 4, 8


def write_session(path: Path, repeats: str, rng: np.random.Generator, n_train: int = 60, n_test: int = 50,
                  extra_test_bin: bool = False, n_cells: int = N_CELLS, size: int = H) -> dict:
    """A recording in the distributed layout; ``repeats``: 'cells' (cellNN) or 'arrays' (firing_rate_*)."""
    values: dict = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for split, n in (("train", n_train), ("test", n_test)):
            n_resp = n + 1 if (extra_test_bin and split == "test") else n
            stim = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
            f[f"{split}/stimulus"] = stim
            f[f"{split}/time"] = np.arange(n) * 0.01
            f[f"{split}/response/binned"] = rng.poisson(0.3, (n_cells, n_resp)).astype(np.uint16)
            values[f"{split}/stimulus"] = stim
            for w in WIDTHS:
                rate = rng.gamma(2.0, 5.0, (n_cells, n_resp)).astype(np.float32)
                f[f"{split}/response/firing_rate_{w}ms"] = rate
                values[f"{split}/firing_rate_{w}ms"] = rate
        if repeats == "cells":
            trials = rng.gamma(2.0, 5.0, (N_REP, n_cells, n_test)).astype(np.float32)
            for c in range(n_cells):
                f[f"test/repeats/cell{c + 1:02d}"] = trials[:, c]
            values["repeats"] = trials
        else:
            for w in WIDTHS:
                trials = rng.gamma(2.0, 5.0, (N_REP, n_cells, n_test)).astype(np.float32)
                f[f"test/repeats/firing_rate_{w}ms"] = trials
                values[f"repeats_{w}"] = trials
    return values

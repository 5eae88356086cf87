"""Tiny files in the published recording and interneuron layouts, written with plain h5py.

Independent of ``retcodec.write_recording``/``write_interneurons`` so that the
readers are tested against the published recording and interneuron layouts (docs/formats.md),
not against retcodec's own writer.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np


def index_stimulus(n_time: int, size: int = 50) -> np.ndarray:
    """uint8 (n_time, size, size) frames whose every pixel holds the frame index."""
    assert n_time <= 256, "frame indices must fit uint8"
    return np.broadcast_to(np.arange(n_time, dtype=np.uint8)[:, None, None],
                           (n_time, size, size)).copy()


def ramp_rate(n_cells: int, n_time: int) -> np.ndarray:
    """(n_cells, n_time) rates with ``rate[c, t] = 1000 c + t`` (cell and bin readable)."""
    return (1000.0 * np.arange(n_cells)[:, None] + np.arange(n_time)[None, :]).astype(np.float32)


def published_split(n_cells: int, n_time: int, size: int = 50, seed: int = 0,
                    n_resp: int | None = None) -> dict[str, np.ndarray]:
    """Arrays of one split: random uint8 stimulus, ramp rates, Poisson-like counts.

    ``n_resp`` (default ``n_time``) is the number of response bins (one more for
    the white-noise test quirk).
    """
    rng = np.random.default_rng(seed)
    n_resp = n_time if n_resp is None else n_resp
    return {"stimulus": rng.integers(0, 256, (n_time, size, size), dtype=np.uint8),
            "time": np.arange(n_resp) * 0.01,
            "firing_rate_10ms": ramp_rate(n_cells, n_resp),
            "binned": rng.integers(0, 4, (n_cells, n_resp)).astype(np.uint8)}


def write_published_recording(path: str | Path, splits: Mapping[str, Mapping[str, Any]], *,
                              repeats: Mapping[int, np.ndarray] | None = None,
                              truth: Mapping[str, Any] | None = None,
                              circuit: str | None = None,
                              stimulus_chunks: tuple[int, ...] | None = None) -> Path:
    """Write ``<split>/{stimulus,time,response/firing_rate_10ms,response/binned}``.

    Keys absent from a split dict are not written (to test missing datasets).
    ``repeats`` maps a 0-based cell index to (n_repeats, T) trials, written to
    ``test/repeats/cellNN`` (1-based). ``truth`` arrays go to the ``truth`` group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        for split, arrays in splits.items():
            group = h5.create_group(split)
            for key, value in arrays.items():
                name = f"response/{key}" if key in ("firing_rate_10ms", "binned") else key
                chunks = stimulus_chunks if key == "stimulus" else None
                group.create_dataset(name, data=value, chunks=chunks)
        for cell, trials in (repeats or {}).items():
            h5.create_dataset(f"test/repeats/cell{cell + 1:02d}", data=trials)
        if truth is not None or circuit is not None:
            group = h5.create_group("truth")
            for key, value in (truth or {}).items():
                value = np.asarray(value)
                if value.dtype.kind == "U":
                    group.create_dataset(key, data=value.tolist(), dtype=h5py.string_dtype())
                else:
                    group.create_dataset(key, data=value)
            if circuit is not None:
                group.attrs["circuit"] = circuit
    return path


def write_published_interneurons(path: str | Path, groups: Mapping[str, tuple[Any, Any]], *,
                                 truth: Mapping[str, Any] | None = None) -> Path:
    """Write ``<stim>/stimuli`` and ``<stim>/detrended_membrane_potential`` per group."""
    path = Path(path)
    with h5py.File(path, "w") as h5:
        for stim_type, (stimulus, vm) in groups.items():
            if stimulus is not None:
                h5.create_dataset(f"{stim_type}/stimuli", data=stimulus)
            if vm is not None:
                h5.create_dataset(f"{stim_type}/detrended_membrane_potential", data=vm)
        if truth is not None:
            for key, value in truth.items():
                value = np.asarray(value)
                if value.dtype.kind == "U":
                    h5.create_dataset(f"truth/{key}", data=value.tolist(), dtype=h5py.string_dtype())
                else:
                    h5.create_dataset(f"truth/{key}", data=value)
    return path


def file_fingerprint(path: str | Path) -> tuple[str, int]:
    """(sha256, mtime_ns) of a file, to check that reading leaves it unchanged."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def truncate_half(path: str | Path) -> Path:
    """Cut a file to half its bytes, in place (a broken download)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path

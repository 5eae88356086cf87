"""Where contributions go while they are computed: the stimulus source, in-memory and resumable on-disk chunk stores."""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from retcodec.errors import ConfigurationError, NonFiniteError, OutputPathError, ShapeError
from retcodec.io.storage import atomic_path, write_error
from retcodec.io.validation import check_input_dtype, check_model_input, warn_unscaled_input
from retcodec.engine.targets import Surprisal

__all__ = ["StimulusSource", "MemoryStore", "PartialStore", "partial_dir", "owns_partial", "discard_partial",
           "PARTIAL_MARKER", "baseline_array", "baseline_attr"]


# =========================================================================== stimulus
class StimulusSource:
    """Uniform access to windows: an array ``(n, T, H, W)`` or a recordings ``Windows``."""

    def __init__(self, stimulus: Any, model: nn.Module) -> None:
        if isinstance(stimulus, (xr.Dataset, xr.DataArray, xr.DataTree)):
            from retcodec.io import recordings as recordings
            meta = getattr(model, "meta", {}) or {}
            shape = getattr(model, "img_shape", None)
            history = {"history": int(shape[0])} if shape else {}
            stimulus = recordings.windows(stimulus, norm_stats=meta.get("norm_stats"), **history)
        if isinstance(stimulus, torch.Tensor):
            stimulus = stimulus.detach().cpu().numpy()
        if isinstance(stimulus, (list, tuple)):
            stimulus = np.asarray(stimulus)
        check_input_dtype(stimulus, "stimulus windows")
        if isinstance(stimulus, (Mapping, str, bytes)):
            raise ConfigurationError(f"stimulus must be an array (n, T, H, W), a torch tensor, a recording "
                                     f"Dataset or retcodec Windows, got {type(stimulus).__name__}")
        self.windows = stimulus
        self.is_array = isinstance(stimulus, np.ndarray)
        if not self.is_array and not (hasattr(stimulus, "__len__") and hasattr(stimulus, "__getitem__")):
            raise ConfigurationError(
                f"stimulus must be an array (n, T, H, W), a torch tensor, a recording Dataset or a "
                f"retcodec.io.recordings.Windows, got {type(stimulus).__name__}")
        self.n = len(stimulus)
        if self.n < 1:
            raise ShapeError("the stimulus holds no windows")
        expected = tuple(getattr(model, "img_shape", ()) or ())
        first = np.asarray(stimulus[0:1])
        if first.ndim != 4 or (expected and first.shape[1:] != expected):
            want = f"(n, {', '.join(map(str, expected))})" if expected else "(n, T, H, W)"
            got = stimulus.shape if self.is_array else ("n",) + first.shape[1:]
            raise ShapeError(f"stimulus windows must have shape {want} for this model, got {tuple(got)}")
        self.window_shape = first.shape[1:]
        if self.is_array:            # windows made by retcodec.windows were checked against their norm stats
            warn_unscaled_input(first, "the first stimulus window")
        time = getattr(stimulus, "time", None)
        if time is not None and not self.is_array:
            self.time = np.asarray(time, dtype=np.float64)
            self.time_attrs = {"long_name": "time of the predicted bin", "units": "s"}
        else:
            self.time = np.arange(self.n)
            self.time_attrs = {"long_name": "window index", "units": "1"}
        if len(self.time) != self.n:
            raise ShapeError(f"stimulus has {self.n} windows but {len(self.time)} times")
        cells = getattr(stimulus, "cells", None)
        self.cells = None if cells is None else np.asarray(cells)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Windows ``start:stop`` as float32 ``(k, T, H, W)``; NaN/Inf raise."""
        x = np.asarray(self.windows[start:stop], dtype=np.float32)
        bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if bad.any():
            first = start + int(np.flatnonzero(bad)[0])
            raise NonFiniteError(f"stimulus window {first} (and {int(bad.sum()) - 1} more in windows "
                                 f"{start}:{stop}) holds NaN or Inf; clean the stimulus first")
        check_model_input(x, f"stimulus windows {start}..{stop - 1}")
        return x

    def fingerprint(self, chunks: Sequence[tuple[int, int]]) -> str:
        """Hash of the times and of the first window of every chunk (identifies the stimulus)."""
        h = hashlib.sha256(np.ascontiguousarray(self.time).tobytes())
        h.update(repr((self.n, self.window_shape)).encode())
        for start, _ in chunks:
            h.update(np.ascontiguousarray(self.read(start, start + 1)).tobytes())
        h.update(np.ascontiguousarray(self.read(self.n - 1, self.n)).tobytes())
        return h.hexdigest()


def baseline_array(baseline: Any, window_shape: tuple[int, ...]) -> np.ndarray:
    """The baseline window as ``(1, T, H, W)`` float64 (a scalar fills the window)."""
    if isinstance(baseline, torch.Tensor):
        baseline = baseline.detach().cpu().numpy()
    try:
        arr = np.asarray(baseline, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigurationError(f"baseline must be a number or an array of numbers, got "
                                 f"{type(baseline).__name__} {baseline!r:.60}") from None
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    try:
        arr = np.broadcast_to(arr, window_shape)
    except ValueError:
        raise ShapeError(f"baseline must be a scalar or broadcast to one window {window_shape}, "
                         f"got shape {arr.shape}") from None
    if not np.all(np.isfinite(arr)):
        raise NonFiniteError("the baseline holds NaN or Inf")
    check_model_input(arr, "the baseline")            # a model input like any window: within ±MAX_MODEL_INPUT
    return np.array(arr, dtype=np.float64, copy=True)[None]


def baseline_attr(baseline: np.ndarray) -> float | str:
    flat = baseline.ravel()
    if np.all(flat == flat[0]):
        return float(flat[0])
    digest = hashlib.sha256(baseline.tobytes()).hexdigest()[:16]
    return f"array {baseline.shape[1:]} mean={flat.mean():.6g} sha256={digest}"


# =========================================================================== chunk stores
class MemoryStore:
    """Chunk results kept in memory (no ``out`` file)."""

    def __init__(self) -> None:
        self.chunks: dict[int, dict[str, np.ndarray]] = {}

    def done(self) -> set[int]:
        return set(self.chunks)

    def save(self, index: int, result: Mapping[str, np.ndarray]) -> None:
        self.chunks[index] = dict(result)

    def load(self, index: int) -> dict[str, np.ndarray]:
        return self.chunks[index]

    def discard(self) -> None:
        self.chunks.clear()


#: the file that marks a partial folder as retcodec's own (nothing else in it is ever deleted)
PARTIAL_MARKER = ".retcodec-partial"
#: the names retcodec writes inside a partial folder
_PARTIAL_PATTERNS = ("params.json", "target.npz", "chunk-*.npz", PARTIAL_MARKER, ".*.tmp")


def partial_dir(out: Path) -> Path:
    """Where the chunks of ``out`` go while they are computed: ``<out>.partial/``."""
    return out.with_name(out.name + ".partial")


def owns_partial(folder: Path) -> bool:
    """Whether ``folder`` is provably a partial folder retcodec made: it holds retcodec's marker
    file, or (older versions) only the files retcodec writes there with a readable ``params.json``."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    if (folder / PARTIAL_MARKER).is_file():
        return True
    entries = list(folder.iterdir())
    ours = all(e.is_file() and any(e.match(p) for p in _PARTIAL_PATTERNS) for e in entries)
    try:
        params = json.loads((folder / "params.json").read_text())
    except (OSError, ValueError):
        return False
    return ours and isinstance(params, dict) and {"model", "stimulus", "chunks"} <= set(params)


def discard_partial(folder: Path) -> None:
    """Delete the files retcodec wrote in ``folder`` (a partial run), then the folder if empty.

    A folder retcodec did not make is refused with :class:`OutputPathError`; files a user
    put into a retcodec folder are left where they are.
    """
    if not folder.exists():
        return
    if not owns_partial(folder):
        raise _not_ours(folder)
    for pattern in _PARTIAL_PATTERNS:
        for f in folder.glob(pattern):
            if f.is_file() and not f.is_symlink() and f.name != PARTIAL_MARKER:
                f.unlink(missing_ok=True)
    if not any(e.name != PARTIAL_MARKER for e in folder.iterdir()):
        (folder / PARTIAL_MARKER).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


def _not_ours(folder: Path) -> OutputPathError:
    return OutputPathError(
        f"{folder} exists but was not made by retcodec (no {PARTIAL_MARKER} marker), and retcodec streams "
        f"the chunks of this output there; it deletes nothing it did not write. Rename or move that "
        f"folder, or choose another output name")


class PartialStore(MemoryStore):
    """Chunk results streamed to ``<out>.partial/`` (one ``.npz`` per chunk, each written atomically).

    ``params.json`` identifies the run; a rerun with the same parameters skips
    the chunks already there. ``target.npz`` holds a fitted surprisal so that a
    resumed run reuses it. A marker file marks the folder as retcodec's: a folder of
    that name without it is refused, never deleted.
    """

    def __init__(self, out: Path, params: Mapping[str, Any], resume: bool) -> None:
        super().__init__()
        self.dir = partial_dir(out)
        self.params = json.loads(json.dumps(dict(params), default=str))
        if self.dir.exists() or self.dir.is_symlink():
            if not owns_partial(self.dir):
                raise _not_ours(self.dir)
            old = self._read_params()
            if not resume or old is None:
                discard_partial(self.dir)
            elif old != self.params:
                diff = sorted(k for k in set(old) | set(self.params) if old.get(k) != self.params.get(k))
                raise ConfigurationError(
                    f"{self.dir} holds a partial run with different parameters ({', '.join(diff)}); "
                    f"rerun with the same parameters to resume it, or pass resume=False "
                    f"(or delete the folder) to start afresh")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / PARTIAL_MARKER).write_text("made by retcodec: chunks of a contribution run\n")
        except OSError as err:
            raise write_error(self.dir, err) from err
        if not (self.dir / "params.json").exists():
            with atomic_path(self.dir / "params.json") as tmp:
                tmp.write_text(json.dumps(self.params, indent=1, sort_keys=True))

    def _read_params(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.dir / "params.json").read_text())
        except (OSError, ValueError):
            return None

    def _chunk_path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:06d}.npz"

    def done(self) -> set[int]:
        found = (p.stem.split("-", 1)[1] for p in self.dir.glob("chunk-*.npz"))
        return {int(i) for i in found if i.isdigit()}

    def save(self, index: int, result: Mapping[str, np.ndarray]) -> None:
        with atomic_path(self._chunk_path(index)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **result)

    def load(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self._chunk_path(index)) as z:
            return {k: z[k] for k in z.files}

    def saved_surprisal(self) -> Surprisal | None:
        path = self.dir / "target.npz"
        if not path.exists():
            return None
        with np.load(path) as z:
            return Surprisal(z["mean"], z["sample_cov"], regularization=float(z["shrinkage"]),
                             method=str(z["method"]), n_samples=int(z["n_samples"]))

    def save_surprisal(self, target: Surprisal) -> None:
        with atomic_path(self.dir / "target.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, mean=target.mean, sample_cov=target.sample_covariance,
                     shrinkage=target.shrinkage, method=target.method,
                     n_samples=target.n_samples or 0)

    def discard(self) -> None:
        discard_partial(self.dir)

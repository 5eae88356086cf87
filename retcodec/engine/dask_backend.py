"""Run contribution chunks on ``dask.distributed`` workers (optional dependency).

The driver reads each chunk's windows and submits ``(engine, windows)`` tasks,
keeping at most ``2 × workers`` chunks in flight so that memory stays bounded;
results come back to the driver, which stores them in completion order. The
engine (model copy, target, settings) is scattered to the workers once. Every
window's result depends only on the window, its global index and the batching
within its chunk, so the results equal the serial backend's.
"""
from __future__ import annotations

import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from retcodec.errors import ConfigurationError

__all__ = ["run_chunks"]


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigurationError(
            "backend='dask' needs dask.distributed: pip install 'dask[distributed]' "
            "(or retcodec[dask]), or use backend='serial'") from None
    return distributed


def _compute_chunk(engine: Any, x: np.ndarray, start: int) -> dict[str, np.ndarray]:
    """Worker task: results of one chunk (``x`` holds windows ``start ...``)."""
    import multiprocessing

    import torch
    if multiprocessing.parent_process() is not None:        # a worker process of its own
        from distributed import get_worker
        torch.set_num_threads(max(1, int(get_worker().state.nthreads)))
    return engine.compute(x, start)


def _client(distributed: Any, scheduler: Any, n_workers: int) -> tuple[Any, list[Any]]:
    """A Client for ``scheduler`` and the objects to close afterwards (those created here)."""
    if isinstance(scheduler, distributed.Client):
        return scheduler, []
    if scheduler is None:
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ConfigurationError(f"n_workers must be an integer >= 1, got {n_workers!r}")
        cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                           processes=True, dashboard_address=":0")
        client = distributed.Client(cluster)
        return client, [client, cluster]
    client = distributed.Client(scheduler)      # a cluster object or an address string
    return client, [client]


def run_chunks(engine: Any, source: Any, chunks: Sequence[tuple[int, int]], todo: Sequence[int],
               finished: Callable[[int, Mapping[str, np.ndarray]], None], *, scheduler: Any = None,
               n_workers: int = 2, on_progress: Callable[[int], Any] | None = None) -> None:
    """Compute chunks ``todo`` on dask workers; ``finished(index, result)`` as each completes."""
    distributed = _import_distributed()
    if not todo:
        return
    client, to_close = _client(distributed, scheduler, n_workers)
    try:
        n_slots = 2 * max(1, len(client.scheduler_info().get("workers", {})) or n_workers)
        [engine_future] = client.scatter([engine], broadcast=True)
        pending = list(todo)
        index_of: dict[Any, int] = {}
        token = uuid.uuid4().hex[:12]
        running = distributed.as_completed()

        def submit_next() -> None:
            index = pending.pop(0)
            start, stop = chunks[index]
            future = client.submit(_compute_chunk, engine_future, source.read(start, stop), start,
                                   pure=False, key=f"retcodec-chunk-{index}-{token}")
            index_of[future] = index
            running.add(future)

        for _ in range(min(n_slots, len(pending))):
            submit_next()
        for future in running:
            index = index_of.pop(future)
            result = future.result()
            finished(index, result)
            if on_progress is not None:
                start, stop = chunks[index]
                on_progress(stop - start)
            if pending:
                submit_next()
    finally:
        for obj in to_close:
            obj.close()

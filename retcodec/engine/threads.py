"""Thread limits for small-tensor work.

Tiny networks (the mode autoencoder, per-batch MLPs) gain nothing from
intra-op parallelism, and when the cores are shared the OpenMP threads of
each process spin against each other: measured here, a mode fit that takes
seconds on one thread took minutes on two threads beside another busy process.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``; restore the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)

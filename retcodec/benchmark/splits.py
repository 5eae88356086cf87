"""Which retina seeds tune the method and which report it.

Method choices (defaults, thresholds, the k rule, feature sets) may look at the
**tuning** retinas only; claims are reported on the **test** retinas. The seeds are
disjoint ranges of the v3 family (:func:`retcodec.insilico.family.draw_retina`);
``--retinas N`` takes the first ``N`` seeds of a split, so a larger benchmark extends a
smaller one.
"""
from __future__ import annotations

from retcodec.errors import ConfigurationError

__all__ = ["SPLITS", "retina_seeds", "split_of"]

#: retina seeds of each split (disjoint; never change them: published numbers refer to them)
SPLITS: dict[str, range] = {"tuning": range(1000, 2000), "test": range(2000, 3000)}


def retina_seeds(split: str, n: int) -> list[int]:
    """The first ``n`` retina seeds of ``split`` ('tuning' or 'test')."""
    if split not in SPLITS:
        raise ConfigurationError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(SPLITS[split]):
        raise ConfigurationError(f"the number of retinas must be an integer in 1..{len(SPLITS[split])}, got {n!r}")
    return list(SPLITS[split][:n])


def split_of(seed: int) -> str:
    """The split a retina seed belongs to ('tuning', 'test' or 'none')."""
    return next((name for name, seeds in SPLITS.items() if seed in seeds), "none")

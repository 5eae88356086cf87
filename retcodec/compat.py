"""Deprecated spellings that keep working for one release."""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

__all__ = ["accept_seed_alias"]

F = TypeVar("F", bound=Callable[..., Any])


def accept_seed_alias(func: F) -> F:
    """Let ``func(seed=...)`` mean ``func(random_state=...)``, with a DeprecationWarning.

    retcodec 0.2 names every seed ``random_state`` (as scikit-learn does); 0.1 said
    ``seed``. Giving both is an error.
    """
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "seed" in kwargs:
            if "random_state" in kwargs:
                from retcodec.errors import ConfigurationError
                raise ConfigurationError(f"{func.__name__}: give random_state only (seed is its "
                                         f"deprecated alias)")
            warnings.warn(f"{func.__name__}(seed=...) is deprecated; use random_state=...",
                          DeprecationWarning, stacklevel=2)
            kwargs["random_state"] = kwargs.pop("seed")
        return func(*args, **kwargs)
    return wrapper  # type: ignore[return-value]

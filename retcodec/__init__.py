"""retcodec: contribution decomposition (CODEC) of retina CNN models, as labelled data.

Most of the public API is imported lazily, so a stage's dependencies load only
when it is used.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

# Idle OpenMP threads that spin steal the cores from each other when a machine
# is shared; passive waiting costs nothing when it is not (measured: the
# contribution engine ran 6-9x slower on a busy 2-core machine without it).
# Takes effect when retcodec is imported before torch; the user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__

# public name -> module that defines it
_API = {
    # models (checkpoints in the published layout)
    "load_model": "models", "save_model": "models", "predict": "models",
    "load_checkpoint": "checkpoint",
    # recordings
    "load_recording": "recordings", "windows": "recordings", "Windows": "recordings",
    "write_recording": "recordings", "load_interneurons": "interneurons",
    "write_interneurons": "interneurons",
    # in-silico retina, fitting and evaluation
    "InSilicoRetina": "insilico", "simulate": "insilico",
    "fit": "fitting", "evaluate": "evaluation",
    # contributions
    "contributions": "contributions", "Surprisal": "targets", "CellRate": "targets",
    "SumOfRates": "targets", "CallableTarget": "targets",
    # interpretation
    "ContributionModes": "modes", "NMFModes": "modes", "PCAModes": "modes",
    "cell_types": "celltypes", "irf": "irf", "rank1": "irf",
    "mode_combinations": "combinations", "match_interneurons": "interneuron_match",
    # one command
    "run": "pipeline",
}

__all__ = ["__version__", *sorted(_API)]

# ``contributions`` and ``irf`` name both a function and the module defining it.
# Bind the functions eagerly: importing the submodule later (e.g. by another
# stage) would otherwise replace a lazily bound function by the module.
from .contributions import contributions  # noqa: E402,F401
from .irf import irf  # noqa: E402,F401


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'retcodec' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

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

from retcodec._version import __version__

# public name -> module that defines it
_API = {
    # I/O: models (checkpoints in the published layout), recordings, interneuron files
    "load_model": "io.models", "save_model": "io.models", "predict": "io.models",
    "load_checkpoint": "io.checkpoint",
    "load_recording": "io.recordings", "windows": "io.recordings", "Windows": "io.recordings",
    "write_recording": "io.recordings", "load_interneurons": "io.interneurons",
    "write_interneurons": "io.interneurons",
    # in-silico retina, fitting and evaluation
    "InSilicoRetina": "insilico.retina", "InSilicoCircuit": "insilico.circuit",
    "simulate": "insilico.circuit",
    "fit": "fitting", "evaluate": "analysis.evaluation",
    # contribution engine
    "contributions": "engine.contributions", "silence": "engine.perturb",
    "Surprisal": "engine.targets",
    "CellRate": "engine.targets", "SumOfRates": "engine.targets",
    "CallableTarget": "engine.targets",
    # modes
    "ContributionModes": "modes.estimators", "NMFModes": "modes.estimators",
    "PCAModes": "modes.estimators", "fit_layer": "modes.layer",
    "load_modes": "modes.layer",
    # analyses
    "cell_types": "analysis.celltypes", "irf": "analysis.irf", "rank1": "analysis.rank1",
    "mode_combinations": "analysis.combinations",
    "match_interneurons": "analysis.interneuron_match",
    # one command
    "run": "pipeline.run",
}

__all__ = ["__version__", *sorted(_API)]

# ``contributions`` and ``irf`` are bound eagerly (the most used entry points).
from retcodec.engine.contributions import contributions  # noqa: E402,F401
from retcodec.analysis.irf import irf  # noqa: E402,F401


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'retcodec' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

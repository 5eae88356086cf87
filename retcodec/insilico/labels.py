"""Label model channels by the true in-silico interneuron type they resemble (for the report)."""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import xarray as xr

__all__ = ["insilico_unit_types"]


def insilico_unit_types(recording: xr.Dataset, model: Any, layers: Sequence[str], device: str = "cpu",
                        n_frames: int = 1500) -> xr.Dataset | None:
    """Which true interneuron type each model channel resembles, when the recording names its circuit.

    Rebuilds the in-silico circuit described by the recording's ``truth_circuit`` attr and
    correlates the model's channels with its interneurons on a box stimulus. A circuit
    this retcodec cannot rebuild (another simulator, another version) is reported with a
    warning and skipped: returns None.
    """
    from retcodec.analysis.interneuron_match import label_units_by_truth
    from retcodec.insilico.circuit import interneuron_maps
    from retcodec.insilico.family import circuit_from_json
    from retcodec.insilico.retina import boxes, pad_to
    from retcodec.io.recordings import windows

    text = recording.attrs.get("truth_circuit")
    if not text:
        return None
    try:
        circuit = circuit_from_json(str(text), calibrate=False)   # the maps need no calibration
    except Exception as err:  # noqa: BLE001 - any foreign layout: report and ignore
        warnings.warn(f"the recording's truth circuit is not one this retcodec can rebuild ({err}); "
                      f"model channels are not labelled by true interneuron type", stacklevel=2)
        return None
    seed = getattr(getattr(circuit, "params", None), "seed", None)
    if seed is None:
        seed = getattr(getattr(circuit, "config", getattr(circuit, "cfg", None)), "random_state", 0)
    rng = np.random.default_rng([int(seed), 999])
    contrast = pad_to(2.0 * boxes(n_frames, rng).astype(np.float32) - 1.0)
    maps = interneuron_maps(circuit, contrast)
    w = windows(contrast, norm_stats={"mean": 0.0, "std": 1.0})
    return label_units_by_truth(model, w, maps, layers=layers, device=device)

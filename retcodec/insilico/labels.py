"""Label model channels by the true in-silico interneuron type they resemble (for the report)."""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import xarray as xr

__all__ = ["insilico_unit_types"]


def insilico_unit_types(recording: xr.Dataset, model: Any, layers: Sequence[str], device: str = "cpu",
                        n_frames: int = 3000) -> xr.Dataset | None:
    """Which true interneuron type each model channel resembles, when the recording names its circuit.

    Rebuilds the in-silico circuit described by the recording's ``truth_circuit`` attr and
    correlates the model's channels with its interneurons on a box stimulus. A circuit
    this retcodec cannot rebuild (another simulator, another version) is reported with a
    warning and skipped: returns None.
    """
    from retcodec.analysis.interneuron_match import label_units_by_truth
    from retcodec.insilico.retina import CircuitParams, InSilicoRetina, boxes, pad_to
    from retcodec.io.recordings import windows

    circuit = recording.attrs.get("truth_circuit")
    if not circuit:
        return None
    try:
        params = CircuitParams.from_json(circuit)
        retina = InSilicoRetina(params.seed, params)
    except Exception as err:  # noqa: BLE001 - any foreign layout: report and ignore
        warnings.warn(f"the recording's truth circuit is not one this retcodec can rebuild ({err}); "
                      f"model channels are not labelled by true interneuron type", stacklevel=2)
        return None
    rng = np.random.default_rng([params.seed, 999])
    contrast = pad_to(2.0 * boxes(n_frames, rng).astype(np.float32) - 1.0)
    v = retina.bipolar_potentials(contrast)
    maps = dict(v)
    maps.update(retina.amacrine_potentials({k: retina.rectify(x) for k, x in v.items()}))
    w = windows(contrast, norm_stats={"mean": 0.0, "std": 1.0})
    return label_units_by_truth(model, w, maps, layers=layers, device=device)

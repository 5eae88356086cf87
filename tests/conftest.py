"""Fixtures shared by the pipeline tests: a tiny simulated experiment and a random model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retcodec.fitting import FitConfig
from retcodec.insilico import retina as ins
from retcodec.io.architectures import build_model
from retcodec.io.models import save_model

FAST = ins.CircuitParams(calibration_seconds=10.0)
@pytest.fixture(scope="module")
def one_thread():
    """Small convolutions run fastest (and deterministically) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: run options small enough for a test
QUICK = dict(steps=4, max_windows=40, stability_seeds=(0, 1), irf_sets=2, irf_times_per_set=2,
             mode_options={"max_epochs": 15, "patience": 5}, interneuron_shifts=10, progress=False)


@pytest.fixture(scope="session")
def experiment(tmp_path_factory):
    """A tiny simulated experiment and a random published-layout model with its metadata."""
    root = tmp_path_factory.mktemp("insilico")
    plan = ins.SimulationPlan(naturalscene_train=1, naturalscene_test=1.5, whitenoise_train=1,
                              whitenoise_test=1, n_repeats=3, interneuron_seconds=3)
    paths = ins.simulate(root / "data", seed=0, plan=plan, progress=False, params=FAST)
    from retcodec.io.recordings import load_recording, stimulus_norm_stats
    rec = load_recording(paths["naturalscene"], split="test")
    centers = np.rint(np.stack([rec.center_y.values, rec.center_x.values], 1)).astype(int)
    cells = [int(c) for c in rec["cell"].values]
    torch.manual_seed(0)
    model = build_model("VaryModel", FitConfig().hyps(len(cells), centers, dict(
        dataset="insilico", stim_type="naturalscene", cells=cells)))
    model.meta.update(dataset="insilico", stim_type="naturalscene", cells=cells, img_shape=[40, 50, 50],
                      norm_stats=stimulus_norm_stats(paths["naturalscene"]), centers=centers)
    model_path = save_model(model, root / "model.pt")
    return {"root": root, "paths": paths, "model": model_path}



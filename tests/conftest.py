"""Fixtures shared by the pipeline tests: a tiny simulated experiment and a random model."""
from __future__ import annotations

from pathlib import Path

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
             mode_options={"max_epochs": 15, "patience": 5}, interneuron_shifts=10, typing_windows=10,
             progress=False)


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




#: contribution chunks of the shared run (several chunks, so a test can interrupt between them)
RUN_CHUNK_SIZE = 10
#: a foreign file placed in the shared run's figures folder before it runs
FOREIGN_FIGURE = "holiday.png"


@pytest.fixture(scope="session")
def finished_run(experiment, tmp_path_factory):
    """One complete `retcodec run` on the tiny experiment (QUICK, no interneurons, PNG figures only),
    shared by the tests that need a finished results folder; they copy it (:func:`copy_run`) before
    changing anything. Contributions are computed in chunks of ``RUN_CHUNK_SIZE`` windows, and a
    foreign PNG sits in ``figures/`` from before the run (a user's file the run must ignore)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from retcodec.engine import contributions as engine_contributions
    from retcodec.pipeline.run import run

    out = tmp_path_factory.mktemp("finished") / "results"
    (out / "figures").mkdir(parents=True)
    fig = plt.figure(figsize=(1, 1))
    fig.savefig(out / "figures" / FOREIGN_FIGURE)
    plt.close(fig)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine_contributions, "DEFAULT_CHUNK_SIZE", RUN_CHUNK_SIZE)
        summary = run(experiment["model"], experiment["paths"]["naturalscene"], out=str(out), **SMALL)
    return {"out": out, "summary": summary}


#: the run options of the shared run (and of runs compared with it)
SMALL = {**QUICK, "interneurons": (), "quick": True}


def copy_run(finished: dict, dest):
    """A private copy of the shared results folder (timestamps kept)."""
    import shutil
    return Path(shutil.copytree(finished["out"], dest))

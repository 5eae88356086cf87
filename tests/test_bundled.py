"""The bundled default opens like published files, carries its truth, and is found robustly."""
from __future__ import annotations

import numpy as np
import pytest

import retcodec as rc
from retcodec.io import bundled as bundled
from retcodec.errors import MissingDataError
from retcodec.analysis.evaluation import pearson
from retcodec.insilico.circuit import AMACRINE_TYPES, BIPOLAR_TYPES, GANGLION_TYPES


def test_bundled_model_and_recording_load_like_published_files():
    model = rc.load_model(bundled.default_model_path())
    assert model.meta["dataset"] == "insilico" and model.meta["stim_type"] == "naturalscene"
    assert list(model.layers) == ["conv0", "conv1", "conv2"]
    rec = rc.load_recording(bundled.default_recording_path(), split="test", cells=model.meta["cells"])
    assert set(rec["cell_type"].values) == set(GANGLION_TYPES)          # the truth travels
    assert rec.sizes["repeat"] == 10 and rec.sizes["cell"] == model.n_cells
    # the fitted model predicts held-out test windows well (a slice keeps the test quick)
    w = rc.windows(rec.isel(time=slice(0, 1040)), norm_stats=model.meta["norm_stats"])
    pred = rc.predict(model, w)
    r = pearson(pred.values.T, rec["rate"].sel(time=pred["time"]).values)
    assert np.median(r) > 0.8


def test_bundled_whitenoise_recording_reproduces_the_published_quirk():
    wn = rc.load_recording(bundled.default_recording_path("whitenoise"), split="test")
    assert wn.attrs["trimmed_bins"] == 1


def test_bundled_interneurons_carry_their_types():
    folder = bundled.default_interneuron_dir()
    bip = rc.load_interneurons(folder / "bipolars_insilico.h5")
    ama = rc.load_interneurons(folder / "amacrines_insilico.h5")
    assert bip.attrs["cell_class"] == "bipolar" and ama.attrs["cell_class"] == "amacrine"
    assert set(bip["boxes"]["cell_type"].values) == set(BIPOLAR_TYPES)
    assert set(ama["boxes"]["cell_type"].values) == set(AMACRINE_TYPES)


def test_environment_variable_overrides_and_missing_files_are_named(tmp_path, monkeypatch):
    (tmp_path / "custom.pt").write_bytes(b"x")
    monkeypatch.setenv("RETCODEC_MODELS", str(tmp_path))
    assert bundled.bundled_dir("models") == tmp_path
    with pytest.raises(MissingDataError, match="insilico_naturalscene.pt"):
        bundled.default_model_path()
    with pytest.raises(ValueError, match="'models' or 'datasets'"):
        bundled.bundled_dir("weights")

"""Hypotheses a lab can act on (analysis.lab_hypotheses): merged per interneuron type, blind spots
left out and listed, truth beside each change, contradictions flagged."""
from __future__ import annotations

import numpy as np
import xarray as xr

from retcodec.analysis.experiments import hypotheses, hypothesis_lines


def synthetic() -> xr.Dataset:
    """4 recordings (3 of type ``bipolar_on``, one of them blind; 1 ``amacrine_wide``), 4 cells."""
    pred = np.array([[-0.6, -0.5, 0.3, 0.02],        # bipolar_on #0
                     [-0.8, -0.7, 0.2, 0.01],        # bipolar_on #1 (agrees on every sign)
                     [0.9, 0.9, 0.9, 0.9],           # bipolar_on #2: blind spot, must not count
                     [0.5, 0.6, -0.05, 0.7]])        # amacrine_wide
    se = np.full_like(pred, 0.02)
    true = np.array([[-0.9, -0.8, -0.3, 0.0]] * 3 + [[0.6, 0.7, 0.0, 5.0]])
    cells = [10, 11, 12, 13]
    return xr.Dataset(
        {"predicted_effect": (("interneuron", "cell"), pred),
         "effect_low": (("interneuron", "cell"), pred - 1.96 * se),
         "effect_high": (("interneuron", "cell"), pred + 1.96 * se),
         "true_effect": (("interneuron", "cell"), true),
         "heldout_correlation": ("interneuron", [0.8, 0.7, 0.05, 0.5]),
         "matched_layer": ("interneuron", ["conv0"] * 4), "matched_channel": ("interneuron", [1, 1, 2, 3]),
         "blind_spot": ("interneuron", [False, False, True, False]),
         "poorly_fit": ("cell", [False, False, False, True]),
         "fit_feve": ("cell", [0.8, 0.8, 0.7, 0.1]),
         "single_effect": (("unit", "cell"), np.full((2, 4), 0.05)),
         "spearman": 0.5, "sign_accuracy": 0.75, "baseline_spearman": 0.3, "baseline_sign_accuracy": 0.6,
         "n_scored_pairs": 16, "n_sign_pairs": 10},
        coords={"interneuron": ["bip/0", "bip/1", "bip/2", "ama/0"], "cell": cells,
                "cell_type": ("interneuron", ["bipolar_on", "bipolar_on", "bipolar_on", "amacrine_wide"]),
                "ganglion_type": ("cell", ["on", "on", "off", "motion"])},
        attrs={"min_feve": 0.4, "min_match_r": 0.2, "stimulus": "the test movie", "sign_threshold": 0.2})


def test_one_hypothesis_per_type_with_merged_recordings_and_truth():
    found = {h.subject: h for h in hypotheses(synthetic(), clear=0.1)}
    assert set(found) == {"bipolar_on", "amacrine_wide"}
    bip = found["bipolar_on"]
    assert bip.recordings == ("bip/0", "bip/1")                       # the blind recording is left out
    on = bip.cell_groups["on|decrease"]
    assert on["cells"] == [10, 11] and np.isclose(on["size"], -0.65)  # median over cells of the mean over recordings
    assert on["member_range"][0] < on["size"] < on["member_range"][1]
    assert not on["contradicted"] and np.isclose(on["true"], -0.85)
    off = bip.cell_groups["off|increase"]
    assert off["contradicted"] and bip.contradicted                   # predicted +25 %, truth -30 %
    assert "the 2 recordings predict" in bip.sentence and "CONTRADICTED" in bip.sentence
    assert "the test movie" in bip.sentence and "Refuted if" in bip.sentence and "Control:" in bip.sentence
    assert "ON-sustained" not in bip.sentence and "ON bipolar cells (2 recordings)" in bip.sentence
    wide = found["amacrine_wide"]
    assert 13 not in wide.increases                                   # the poorly fit cell gets no claim
    assert not wide.contradicted


def test_recordings_that_disagree_on_a_sign_state_no_change():
    ds = synthetic()
    pred = ds["predicted_effect"].values.copy()
    pred[1, 0] = 0.4                                 # recording 1 now predicts a rise of cell 10
    ds["predicted_effect"].values[:] = pred
    ds["effect_low"].values[:] = pred - 0.04
    ds["effect_high"].values[:] = pred + 0.04
    bip = {h.subject: h for h in hypotheses(ds, clear=0.1)}["bipolar_on"]
    assert 10 not in bip.decreases and 10 not in bip.increases and 11 in bip.decreases


def test_lines_list_what_the_model_cannot_predict_and_how_it_scores():
    lines = hypothesis_lines(synthetic())
    blind = [l for l in lines if l.startswith("What the model cannot predict")]
    assert len(blind) == 2
    assert "ON bipolar (1 of 3 recording(s): held-out r 0.05" in blind[0]
    assert "motion cells 13 poorly (FEVE 0.10-0.10, below 0.40)" in blind[1]
    score = lines[-1]
    assert "Spearman r = 0.50" in score and "baseline 0.30" in score and "75 %" in score
    assert "are contradicted" in score and "ON bipolar" in score


def test_with_an_ensemble_only_changes_every_model_agrees_on_are_stated():
    ds = synthetic()
    pred = ds["predicted_effect"].values
    other = pred.copy()
    other[0, 1] = 0.3                                 # the second model predicts a rise of cell 11 for bip/0
    ds = ds.assign_coords(member=[0, 1])
    ds["member_effect"] = (("member", "interneuron", "cell"), np.stack([pred, other]))
    ds["stated"] = (("interneuron", "cell"), np.sign(pred) == np.sign(other))
    bip = {h.subject: h for h in hypotheses(ds, clear=0.1)}["bipolar_on"]
    assert 10 in bip.decreases and 11 not in bip.decreases and 11 not in bip.increases
    assert "the 2 models of the ensemble agree on the sign" in bip.sentence
    rng = bip.cell_groups["on|decrease"]["model_range"]
    assert np.isclose(rng[0], -0.7) and np.isclose(rng[1], -0.7)    # cell 10: both models -0.6, -0.8 -> mean -0.7

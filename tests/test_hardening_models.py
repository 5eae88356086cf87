"""Any nn.Module through contributions and silence, steps='auto' on a zero path, renamed
state-dict keys (issue 26): a clear RetcodecError, never a raw torch error or a silent wrong answer."""
from __future__ import annotations

import random
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import retcodec
from retcodec.errors import (CheckpointError, ConfigurationError, DeviceError, RecordingValueError,
                             ShapeError)
from retcodec.io.bundled import default_model_path
from retcodec.io.checkpoint import load_checkpoint
from retcodec.io.models import model_from_checkpoint
from hardening_fixtures import model  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((3, 40, 50, 50)).astype(np.float32)


class Small(nn.Module):
    """(B, 40, 20, 20) -> (B, 3); ``unused`` is never run; ``tuple_out`` returns (y, hidden)."""

    def __init__(self, tuple_out: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(40, 4, 5)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 3)
        self.unused = nn.Conv2d(4, 4, 1)
        self.tuple_out = tuple_out

    def forward(self, x):
        h = self.relu(self.conv(x))
        y = self.head(h.mean(dim=(2, 3)))
        return (y, h) if self.tuple_out else y


class TupleLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(20, 4, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        out, _ = self.lstm(x.mean(dim=1))
        return self.head(out.mean(dim=1))


SMALL_X = np.random.default_rng(1).standard_normal((2, 40, 20, 20)).astype(np.float32)


@pytest.mark.parametrize("api", ["contributions", "silence"])
def test_model_returning_a_tuple_is_refused_with_advice(api):
    call = {"contributions": lambda: retcodec.contributions(Small(tuple_out=True), SMALL_X, layers="conv",
                                                            target="sum_of_rates", steps=2),
            "silence": lambda: retcodec.silence(Small(tuple_out=True), SMALL_X, {"conv": [1]})}[api]
    with pytest.raises(ShapeError, match="returns tuple of 2.*not one tensor"):
        call()


@pytest.mark.parametrize("api", ["contributions", "silence"])
def test_layer_returning_a_tuple_is_refused(api):
    call = {"contributions": lambda: retcodec.contributions(TupleLayer(), SMALL_X, layers="lstm",
                                                            target="sum_of_rates", steps=2),
            "silence": lambda: retcodec.silence(TupleLayer(), SMALL_X, {"lstm": [1]})}[api]
    with pytest.raises(ShapeError, match="layer 'lstm' .*returns tuple"):
        call()


@pytest.mark.parametrize("api", ["contributions", "silence"])
def test_layer_that_forward_never_runs_is_refused(api):
    call = {"contributions": lambda: retcodec.contributions(Small(), SMALL_X, layers=["conv", "unused"],
                                                            target="sum_of_rates", steps=2),
            "silence": lambda: retcodec.silence(Small(), SMALL_X, {"unused": [0]})}[api]
    with pytest.raises(ConfigurationError, match="'unused' .*never run"):
        call()


@pytest.mark.parametrize("shape", [(2, 30, 20, 20), (2, 40, 3, 3), (2, 40, 20)])
def test_input_the_module_cannot_take_is_a_shape_error(shape):
    bad = np.zeros(shape, np.float32)
    with pytest.raises(ShapeError):
        retcodec.contributions(Small(), bad, layers="conv", target="sum_of_rates", steps=2)
    with pytest.raises(ShapeError):
        retcodec.silence(Small(), bad, {"conv": [0]})


def test_retina_model_refuses_windows_of_another_frame_size(model):
    small = np.random.default_rng(0).random((60, 30, 30)) * 255
    w = retcodec.windows(small, norm_stats=model.meta["norm_stats"])
    with pytest.raises(ShapeError, match="40, 50, 50"):
        retcodec.contributions(model, w, steps=2, target="sum_of_rates")
    with pytest.raises(ShapeError):
        retcodec.silence(model, np.zeros((2, 40, 30, 30), np.float32), {"conv1": [1]})
    with pytest.raises(ShapeError):
        retcodec.predict(model, np.zeros((2, 40, 30, 30), np.float32))


def test_silence_argument_mistakes_are_configuration_errors(model, x):
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="cuda"):
            retcodec.silence(model, x, {"conv1": [1]}, device="cuda")
    with pytest.raises(ConfigurationError, match="flat list"):
        retcodec.silence(model, x, {"conv1": np.array([[1, 2], [3, 4]])})
    with pytest.raises(ConfigurationError, match="must map layer names"):
        retcodec.silence(model, x, [1, 2])
    with pytest.raises(ConfigurationError, match="integers"):
        retcodec.silence(model, x, {"conv1": ["a"]})


def test_huge_inputs_are_refused_not_propagated(model, x):
    bad = x.copy()
    bad[1] = 1e30
    with pytest.raises(RecordingValueError, match="beyond"):
        retcodec.contributions(model, bad, steps=2, target="sum_of_rates")
    with pytest.raises(RecordingValueError, match="beyond"):
        retcodec.silence(model, bad, {"conv1": [1]})
    with pytest.raises(RecordingValueError, match="beyond"):
        retcodec.predict(model, bad)


def test_raw_frames_given_as_windows_warn(model):
    raw = (np.random.default_rng(0).random((2, 40, 50, 50)) * 255).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="z-scored"):
        retcodec.predict(model, raw)


# ----------------------------------------------------------------------------- steps="auto"
def test_auto_steps_on_a_zero_path_take_zero_steps_and_report_zero_error(model, x):
    tree = retcodec.contributions(model, x, steps="auto", baseline=x[1], target="sum_of_rates")
    steps, error = tree["quadrature_steps"].values, tree["quadrature_error"].values
    assert steps[1] == 0 and error[1] == 0.0
    assert steps[0] > 0 and steps[2] > 0 and np.all(error[[0, 2]] < 0.05)
    for layer in ("conv0", "conv1"):
        assert np.all(tree[layer]["contribution"].values[1] == 0)
        assert np.any(tree[layer]["contribution"].values[0] != 0)
    alone = retcodec.contributions(model, x[1:2], steps="auto", baseline=x[1], target="sum_of_rates")
    assert alone["quadrature_steps"].values.tolist() == [0]
    assert alone["quadrature_error"].values.tolist() == [0.0]


# ----------------------------------------------------------------------------- state-dict keys
@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint(default_model_path())


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_renamed_and_reordered_keys_load_by_structure(checkpoint):
    reference = model_from_checkpoint(checkpoint)
    items = [(k.replace("sequential", "seq"), v) for k, v in checkpoint["model_state_dict"].items()]
    random.Random(0).shuffle(items)
    model = model_from_checkpoint({**checkpoint, "model_state_dict": OrderedDict(items)})
    assert _same_weights(model, reference)
    assert model.meta["provenance"]["renamed_state_keys"] is True
    # the example of the issue: running_mean and shift (both (8,)) swapped in storage order
    state = OrderedDict((k.replace("sequential", "net"), v) for k, v in checkpoint["model_state_dict"].items())
    keys = list(state)
    i, j = keys.index("net.1.running_mean"), keys.index("net.1.shift")
    keys[i], keys[j] = keys[j], keys[i]
    swapped = OrderedDict((k, state[k]) for k in keys)
    assert _same_weights(model_from_checkpoint({**checkpoint, "model_state_dict": swapped}), reference)


def test_ambiguous_renamed_keys_are_refused(checkpoint):
    opaque = OrderedDict((f"w{i}", v) for i, v in enumerate(checkpoint["model_state_dict"].values()))
    with pytest.raises(CheckpointError, match="could be any of"):
        model_from_checkpoint({**checkpoint, "model_state_dict": opaque})


@pytest.mark.parametrize("steps", [4, "auto"])
def test_windows_equal_to_the_baseline_contribute_exactly_zero(model, x, steps):
    tree = retcodec.contributions(model, x[1:2], steps=steps, baseline=x[1], target="sum_of_rates")
    assert float(tree["target"][0]) == float(tree["target_baseline"][0])
    np.testing.assert_array_equal(tree["completeness_error"].values, 0.0)
    for layer in ("conv0", "conv1"):
        np.testing.assert_array_equal(tree[layer]["contribution"].values, 0.0)
        np.testing.assert_array_equal(tree[layer]["completeness_residual"].values, 0.0)

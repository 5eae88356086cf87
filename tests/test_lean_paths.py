"""The faster and leaner paths give the answers of the direct computations they replace."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retcodec.analysis.kmeans import kmeans, kmeans_plus_plus
from retcodec.engine.percell import _trapezoid_path_sum
from retcodec.errors import ConfigurationError
from retcodec.io.recordings import Windows, smallest_exact
from retcodec.memory import release_memory, resident_bytes
from retcodec.modes.compact import (SCAN_PATIENCE, activity_cut, copies_pool, hals_loadings, nnls_loadings,
                                    scan_frontier)
from retcodec.modes.synthetic import make_sparse_modes


# --------------------------------------------------------------------------- k-means
def blobs(seed: int = 0, k: int = 4, per: int = 6, d: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(k, d))
    labels = np.repeat(np.arange(k), per)
    return centres[labels] + rng.normal(scale=0.5, size=(k * per, d)), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_finds_separated_groups_and_their_inertia(seed):
    from sklearn.metrics import adjusted_rand_score

    x, truth = blobs(seed)
    labels, inertia = kmeans(x, 4, random_state=seed)
    assert adjusted_rand_score(truth, labels) == 1.0
    centres = np.stack([x[labels == j].mean(axis=0) for j in range(4)])
    assert inertia == pytest.approx(float(((x - centres[labels]) ** 2).sum()))


def test_kmeans_is_deterministic_and_k1_is_the_total_sum_of_squares():
    x, _ = blobs(5)
    a, b = kmeans(x, 3, random_state=7), kmeans(x, 3, random_state=7)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert kmeans(x, 1)[1] == pytest.approx(float(((x - x.mean(axis=0)) ** 2).sum()))


def test_kmeans_handles_fewer_distinct_rows_than_k():
    x = np.repeat(np.eye(2), 5, axis=0)
    labels, inertia = kmeans(x, 3)
    assert inertia == pytest.approx(0.0) and len(np.unique(labels)) >= 2
    assert kmeans_plus_plus(x, 3, np.random.default_rng(0)).shape == (3, 2)


@pytest.mark.parametrize("k, n_init", [(0, 10), (30, 10), (2, 0)])
def test_kmeans_refuses_impossible_settings(k, n_init):
    with pytest.raises(ConfigurationError):
        kmeans(np.zeros((24, 3)), k, n_init=n_init)


# --------------------------------------------------------------------------- compact modes
def test_hals_converges_to_the_exact_nnls_loadings():
    rng = np.random.default_rng(0)
    D = np.abs(rng.normal(size=(5, 12)))
    X = np.abs(rng.normal(size=(200, 5))) @ D
    np.testing.assert_allclose(hals_loadings(X, D, sweeps=2000, tol=1e-14), nnls_loadings(X, D), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_frontier_scan_finds_the_count_and_stops_early(seed):
    X, modes, _ = make_sparse_modes(n_samples=1500, n_features=12, n_modes=4, random_state=seed,
                                    noise=0.0)
    atoms = np.concatenate([modes * s for s in (0.5, 1.0, 2.0)])      # scaled copies, as a codebook gives
    pool = copies_pool(atoms, np.ones(len(atoms)), 0.95)
    assert len(pool) == 4                                             # one direction per mode
    frontier = scan_frontier(X, pool, 10, activity_cut(X, 0.2), 0.01, 0.1)
    assert frontier.n_modes[frontier.chosen] == 4 and len(frontier.pruned) == 4
    assert frontier.r2[frontier.chosen] >= 0.99
    assert len(frontier.r2) <= 4 + SCAN_PATIENCE                      # the scan stops once nothing improves


# --------------------------------------------------------------------------- per-cell path sum
def test_trapezoid_path_sum_equals_the_direct_formula():
    g = torch.randn(5, 11, 3, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = torch.randn(11, 3, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    direct = (0.5 * (g[:, 1:] + g[:, :-1]) * (h[1:] - h[:-1]).unsqueeze(0)).sum(1)
    torch.testing.assert_close(_trapezoid_path_sum(g, h), direct, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- windows
def test_smallest_exact_keeps_every_value():
    boxes = np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)
    halves = np.array([0.5, -0.25, 3.0], dtype=np.float32)
    noise = np.random.default_rng(0).normal(size=10).astype(np.float32)
    assert smallest_exact(boxes).dtype == np.int8
    assert smallest_exact(halves).dtype == np.float16
    assert smallest_exact(noise).dtype == np.float32
    assert smallest_exact(np.array([300.0])).dtype == np.float16         # beyond int8
    for a in (boxes, halves, noise):
        np.testing.assert_array_equal(smallest_exact(a).astype(np.float32), a)


@pytest.mark.parametrize("key", [slice(0, 20), slice(5, 60, 7), np.array([40, 3, 3, 0])])
def test_channels_last_windows_hold_the_same_values(key):
    frames = np.random.default_rng(1).integers(-1, 2, size=(100, 6, 5)).astype(np.int8)
    w = Windows(frames, np.arange(100) * 0.01, {"mean": 0.2, "std": 0.7}, 10)
    cl = torch.from_numpy(w.channels_last(key)).permute(0, 3, 1, 2)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(cl.numpy(), w[key])


# --------------------------------------------------------------------------- memory
def test_release_memory_only_when_the_process_grew():
    if resident_bytes() is None:
        pytest.skip("no /proc/self/statm here")
    release_memory()
    assert release_memory(above=1 << 40) is False

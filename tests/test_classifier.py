"""Tests of the classifier adapter (retcodec.classifier) on scikit-learn's digits."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from retcodec.classifier import (ArrayImages, FolderImages, as_image_set, classifier_statistics,
                                 control_experiments, fit_modes, from_loader, image_contributions,
                                 input_maps, load_classifier, mode_class_correlation, run_study)
from retcodec.errors import ConfigurationError, MissingDataError, ShapeError
from retcodec.engine.targets import ClassLogit, TopKLogits

torch.set_num_threads(1)


def digits_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


@pytest.fixture(scope="module")
def digits():
    """The 1797 digits (z-scored, (n, 1, 8, 8)) and a small CNN trained on them in ~1 s."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = ((d.images / 16.0 - 0.3) / 0.4).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    torch.manual_seed(0)
    net = digits_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        for idx in torch.randperm(len(X), generator=gen).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(net(X[idx]), Y[idx]).backward()
            opt.step()
    net.eval()
    accuracy = float((net(X).argmax(1) == Y).float().mean())
    assert accuracy > 0.9
    return x, y, net


@pytest.fixture(scope="module")
def study(digits):
    """Contributions, modes of both sources and their class correlations at layer '3'."""
    x, y, net = digits
    model = load_classifier(net, ["1", "3"])
    images = ArrayImages(x, y)
    tree = image_contributions(model, images)
    out = {"model": model, "images": images, "tree": tree}
    for source in ("contribution", "activation"):
        modes = fit_modes(tree, "3", source=source, max_epochs=40)
        out[source] = modes
        out[f"corr_{source}"] = mode_class_correlation(modes["loadings"], y, images.class_names)
    return out


# --------------------------------------------------------------------------- contributions
def test_contribution_shapes_and_labels(study, digits):
    x, y, net = digits
    tree = study["tree"]
    assert list(tree.children) == ["1", "3"]
    assert tree["3"]["contribution"].dims == ("image", "channel", "sign")
    assert tree["3"]["contribution"].shape == (len(x), 16, 2)
    assert tree["1"]["activation"].shape == (len(x), 8)
    np.testing.assert_array_equal(tree["label"].values, y)
    logits = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_array_equal(tree["prediction"].values, logits.argmax(1))
    np.testing.assert_allclose(tree["target"].values, logits.max(1), rtol=1e-5, atol=1e-5)
    c = tree["3"]["contribution"]
    assert (c.sel(sign="pos") >= 0).all() and (c.sel(sign="neg") <= 0).all()
    assert tree.attrs["steps"] == 10 and tree.attrs["target"] == "top_logit"


def test_completeness_improves_with_steps(digits):
    """IG: Σ contributions ≈ S(x) − S(x0); the error shrinks as the path is refined."""
    x, y, net = digits
    model = load_classifier(net, ["3"])
    errors = []
    for steps in (10, 200):
        tree = image_contributions(model, ArrayImages(x[:100], y[:100]), steps=steps)
        total = tree["3"]["contribution"].sum(("channel", "sign")).values
        delta = tree["target"].values - tree["target_baseline"].values
        errors.append(np.abs(total - delta).sum() / np.abs(delta).sum())
    assert errors[1] < 0.05 and errors[1] < errors[0] / 3


@pytest.mark.parametrize("target", ["top_margin", "softmax_entropy", TopKLogits(3), ClassLogit(4)])
def test_other_targets(digits, target):
    x, y, net = digits
    tree = image_contributions(load_classifier(net, "3"), ArrayImages(x[:8], y[:8]), target=target)
    assert tree["3"]["contribution"].shape == (8, 16, 2)
    assert np.isfinite(tree["3"]["contribution"].values).all()


# --------------------------------------------------------------------------- modes and classes
def test_contribution_modes_correlate_with_classes(study):
    best = {s: np.nanmax(study[f"corr_{s}"]["correlation"].values, axis=0) for s in
            ("contribution", "activation")}
    assert study["corr_contribution"]["correlation"].dims == ("mode", "class")
    assert best["contribution"].shape == (10,)
    assert np.nanmean(best["contribution"]) > 0.5
    assert np.nanmean(best["contribution"]) > np.nanmean(best["activation"])


def test_superclass_correlation(study, digits):
    _, y, _ = digits
    mapping = {str(k): ("even" if k % 2 == 0 else "odd") for k in range(10)}
    ds = mode_class_correlation(study["contribution"]["loadings"], y, [str(k) for k in range(10)], mapping)
    assert list(ds["superclass"].values) == ["even", "odd"]
    r = ds["superclass_correlation"].values
    assert np.isfinite(r).any() and np.nanmax(np.abs(r)) <= 1 + 1e-12
    with pytest.raises(ConfigurationError):
        mode_class_correlation(study["contribution"]["loadings"], y, [str(k) for k in range(10)],
                               {"eleven": "odd"})


def test_ablating_class_mode_is_class_specific(study):
    """Ablating a class's top contribution mode hurts that class more than the others."""
    control = control_experiments(study["model"], study["images"], study["contribution"],
                                  study["corr_contribution"], fractions=(0.0, 0.25, 0.5, 0.75, 1.0))
    assert control["ratio"].dims == ("class", "kind", "group", "fraction")
    np.testing.assert_allclose(control["ratio"].sel(kind="ablate", fraction=0.0), 1.0)
    np.testing.assert_allclose(control["ratio"].sel(kind="preserve", fraction=1.0), 1.0)
    spec = control["specificity"].sel(kind="ablate").values
    assert spec.mean() > 0.05
    assert (spec > 0).mean() >= 0.7


def test_input_maps_are_positive_and_local(study, digits):
    x, y, _ = digits
    maps = input_maps(study["model"], ArrayImages(x[:4], y[:4]), "3", [0, 1, 2], median_size=3)
    assert maps.dims == ("image", "y", "x") and maps.shape == (4, 8, 8)
    assert (maps.values >= 0).all() and maps.values.max() > 0


def test_statistics(study):
    stats = classifier_statistics(study["tree"])
    assert list(stats["layer"].values) == ["1", "3"]
    assert ((stats["contribution_sparsity_mean"] >= 0) & (stats["contribution_sparsity_mean"] <= 1)).all()
    assert (stats["class_dimensionality"] >= 1).all() and (stats["class_dimensionality"] <= 9).all()


# --------------------------------------------------------------------------- token layers
class TinyTokens(nn.Module):
    """Patches of 4x4 pixels -> tokens (B, 4, 12) -> mean -> logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 12)
        self.mix = nn.Sequential(nn.Linear(12, 12), nn.ReLU())
        self.head = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x.unfold(2, 4, 4).unfold(3, 4, 4).reshape(len(x), 4, 16)
        return self.head(self.mix(self.embed(p)).mean(1))


def test_token_layers_sum_over_tokens(digits):
    x, y, _ = digits
    torch.manual_seed(0)
    model = load_classifier(TinyTokens(), ["mix"])
    tree = image_contributions(model, ArrayImages(x[:20], y[:20]), steps=50)
    assert model.layer_layouts["mix"] == "tokens"
    assert tree["mix"]["contribution"].shape == (20, 12, 2)
    total = tree["mix"]["contribution"].sum(("channel", "sign")).values
    delta = tree["target"].values - tree["target_baseline"].values
    np.testing.assert_allclose(total, delta, atol=0.05 * np.abs(delta).max())


# --------------------------------------------------------------------------- images
def test_folder_reader(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for k, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for i in range(3):
            arr = rng.integers(0, 256, size=(20 + 4 * k, 30, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / name / f"{i}.jpg")
    (tmp_path / "notes.txt").write_text("ignored")
    images = as_image_set(tmp_path, resize=12, crop=10, mean=0.5, std=0.25)
    assert isinstance(images, FolderImages)
    assert images.class_names == ["cat", "dog"] and len(images) == 6
    np.testing.assert_array_equal(images.labels, [0, 0, 0, 1, 1, 1])
    batch = images[2:5]
    assert batch.shape == (3, 3, 10, 10) and batch.dtype == np.float32
    assert -2.0 - 1e-6 <= batch.min() and batch.max() <= 2.0 + 1e-6
    grey = FolderImages(tmp_path, resize=None, crop=16, mean=0.0, std=1.0, channels=1)
    assert grey[0].shape == (1, 16, 16) and 0 <= grey[0].min() and grey[0].max() <= 1
    with pytest.raises(ShapeError):
        FolderImages(tmp_path, resize=None, crop=None)[0:6]      # 20x30 and 24x30 images
    with pytest.raises(MissingDataError):
        FolderImages(tmp_path / "missing")


def test_loader_and_arrays(digits):
    x, y, _ = digits
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x[:50]),
                                                                        torch.from_numpy(y[:50])),
                                         batch_size=16)
    images = from_loader(loader)
    assert len(images) == 50 and images[0:2].shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(images.labels, y[:50])
    assert as_image_set(x[:5, 0]).image_shape == (1, 8, 8)        # (n, H, W) gets a channel


# --------------------------------------------------------------------------- errors
def test_bad_input(digits):
    x, y, net = digits
    with pytest.raises(ConfigurationError, match="unknown layer"):
        load_classifier(net, ["layer9"])
    model = load_classifier(net, ["3"])
    with pytest.raises(ShapeError):
        image_contributions(model, np.zeros((4, 3, 8, 8), np.float32))   # 3 channels, net wants 1
    with pytest.raises(ShapeError):
        as_image_set(np.zeros((4, 8), np.float32))
    with pytest.raises(ShapeError):
        ArrayImages(x[:4], y[:3])
    flat = nn.Sequential(digits_net(), nn.Flatten(0))                    # returns (B * 10,)
    with pytest.raises(ShapeError, match="logits"):
        image_contributions(load_classifier(flat, ["0.2"]), ArrayImages(x[:4], y[:4]))
    with pytest.raises(MissingDataError):
        load_classifier("/no/such/model.pt", ["3"])


# --------------------------------------------------------------------------- study and CLI
def test_study_and_cli(tmp_path, digits):
    x, y, net = digits
    keep = np.concatenate([np.flatnonzero(y == k)[:30] for k in range(10)])
    model = load_classifier(net, ["3"])
    summary = run_study(model, ArrayImages(x[keep], y[keep]), tmp_path / "study", max_epochs=15,
                        fractions=(0.0, 0.5, 1.0), n_map_images=3)
    for name in ("contributions.nc", "modes_contribution.nc", "modes_activation.nc", "statistics.nc",
                 "summary.json", "report.html", "figures/control_3.png", "figures/input_maps_3.png"):
        assert (tmp_path / "study" / name).is_file(), name
    assert set(summary["layers"]["3"]) == {"contribution", "activation"}
    assert json.loads((tmp_path / "study" / "summary.json").read_text())["accuracy"] > 0.9

    from retcodec.cli import main
    script = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(net, torch.from_numpy(x[:2])), str(script))
    np.savez(tmp_path / "digits.npz", x=x[keep], y=y[keep])
    # a traced nn.Sequential is unrolled so that its layers can be hooked: same contributions
    scripted = load_classifier(str(script), ["3"])
    a = image_contributions(scripted, ArrayImages(x[:20], y[:20]))
    b = image_contributions(load_classifier(net, ["3"]), ArrayImages(x[:20], y[:20]))
    np.testing.assert_allclose(a["3"]["contribution"].values, b["3"]["contribution"].values, rtol=1e-5, atol=1e-6)
    assert main(["classifier", "--model", str(script), "--images", str(tmp_path / "digits.npz"),
                 "--layers", "3", "--out", str(tmp_path / "cli"), "--max-epochs", "15", "--quiet"]) == 0

    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = net

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.body(z)

    other = tmp_path / "custom.pt"
    torch.jit.save(torch.jit.trace(Custom(), torch.from_numpy(x[:2])), str(other))
    # other scripted models cannot be hooked: a clear error, exit status 2
    assert main(["classifier", "--model", str(other), "--images", str(tmp_path / "digits.npz"),
                 "--layers", "body.3", "--out", str(tmp_path / "cli2")]) == 2


def test_cli_entry_point(tmp_path, digits, monkeypatch, capsys):
    """`retcodec classifier` with a 'module:factory' model and a state_dict writes a report."""
    x, y, net = digits
    (tmp_path / "digits_entry.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),\n"
        "                         nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(256, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    keep = np.concatenate([np.flatnonzero(y == k)[:20] for k in range(10)])
    np.savez(tmp_path / "digits.npz", x=x[keep], y=y[keep])
    from retcodec.cli import main
    assert main(["classifier", "--model", "digits_entry:build", "--weights", str(tmp_path / "w.pt"),
                 "--images", str(tmp_path / "digits.npz"), "--layers", "3", "--out", str(tmp_path / "cli"),
                 "--max-epochs", "10", "--quiet"]) == 0
    assert (tmp_path / "cli" / "report.html").is_file()
    assert "not run by the forward pass" not in capsys.readouterr().err


def test_contributions_stream_and_resume(tmp_path, digits):
    """Per-image contributions stream to disk; an interrupted run resumes from its chunks."""
    x, y, net = digits
    model = load_classifier(net, ["3"])
    images = ArrayImages(x[:96], y[:96])
    full = image_contributions(model, images, chunk_size=32)
    out = tmp_path / "contrib.nc"

    def stop_after_first(index, start, stop):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        image_contributions(model, images, chunk_size=32, out=out, on_chunk=stop_after_first)
    assert not out.exists()                                   # nothing half-written
    computed = []
    resumed = image_contributions(model, images, chunk_size=32, out=out,
                                  on_chunk=lambda i, a, b: computed.append(i))
    assert len(computed) == 2                                 # the first chunk was kept
    np.testing.assert_allclose(resumed["3"]["contribution"].values, full["3"]["contribution"].values,
                               rtol=1e-5, atol=1e-6)
    again = image_contributions(model, images, chunk_size=32, out=out)
    assert again["3"]["contribution"].dims == ("image", "channel", "sign")
    with pytest.raises(ConfigurationError, match="steps=10"):
        image_contributions(model, images, steps=5, out=out)

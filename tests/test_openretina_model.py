"""openretina core-readout models through retcodec (skipped without openretina).

A tiny ``UnifiedCoreReadout`` is built with openretina's own classes and saved as
Lightning saves it (``state_dict`` + ``hyper_parameters`` holding omegaconf configs);
retcodec must load it safely, reproduce its output, expose its core layers, decompose
and silence them; and retcodec's reader of the distributed files must give exactly the
arrays openretina's own ``maheswaranathan_2023`` reader gives.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

openretina = pytest.importorskip("openretina")
omegaconf = pytest.importorskip("omegaconf")

from openretina_fixtures import write_session  # noqa: E402

from retcodec.errors import ConfigurationError  # noqa: E402
from retcodec.io.openretina import published_tree  # noqa: E402
from retcodec.io.openretina.model import load_openretina_model  # noqa: E402
from retcodec.io.openretina.recording import load_published_recording  # noqa: E402

IN_SHAPE = (1, 12, 16, 16)


def tiny_net(sessions=("s1",), seed=0):
    from openretina.models.core_readout import UnifiedCoreReadout

    torch.manual_seed(seed)
    core = omegaconf.OmegaConf.create({
        "_target_": "openretina.modules.core.base_core.SimpleCoreWrapper", "channels": [1, 3, 4],
        "temporal_kernel_sizes": [4, 3], "spatial_kernel_sizes": [5, 3], "gamma_input": 0.0,
        "gamma_temporal": 0.0, "gamma_in_sparse": 0.0, "gamma_hidden": 0.0, "cut_first_n_frames": 0,
        "input_padding": False, "hidden_padding": False, "convolution_type": "separable"})
    readout = omegaconf.OmegaConf.create({
        "_target_": "openretina.modules.readout.multi_readout.MultiGaussianMaskReadout", "scale": True,
        "bias": True, "gaussian_mean_scale": 6.0, "gaussian_var_scale": 4.0, "positive": True})
    info = {"n_neurons_dict": {s: 5 for s in sessions}, "stim_mean": 100.0, "stim_std": 50.0,
            "input_shape": (1, 16, 16), "stim_type": "naturalscene"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = UnifiedCoreReadout(in_shape=IN_SHAPE, n_neurons_dict=info["n_neurons_dict"], core=core,
                                 readout=readout, data_info=info)
    with torch.no_grad():                       # non-trivial batch-norm statistics and weights
        for name, p in net.named_parameters():
            p.add_(0.3 * torch.randn_like(p))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def save_like_lightning(net, path):
    torch.save({"epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.6.6",
                "state_dict": net.state_dict(), "hyper_parameters": dict(net.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    net = tiny_net()
    return net, save_like_lightning(net, tmp_path_factory.mktemp("or") / "tiny.ckpt")


def test_loads_and_reproduces_the_last_time_step(saved):
    net, path = saved
    model = load_openretina_model(path)
    assert model.session == "s1" and model.img_shape == (6, 16, 16)      # 4 + 3 - 1 frames reach one step
    assert list(model.layers) == ["conv0", "conv1"]
    assert model.layers["conv1"] is dict(model.named_modules())["net.core.features.layer1.nonlin"]
    assert model.meta["norm_stats"] == {"mean": 100.0, "std": 50.0} and model.meta["cells"] == list(range(5))
    x = torch.randn(7, 10, 16, 16)
    with torch.no_grad():
        expected = net(x.unsqueeze(1), data_key="s1")[:, -1]
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_session_choice(tmp_path):
    path = save_like_lightning(tiny_net(("a", "b")), tmp_path / "two.ckpt")
    with pytest.raises(ConfigurationError, match="choose one"):
        load_openretina_model(path)
    with pytest.raises(ConfigurationError, match=r"no session 'c'.*\['a', 'b'\]"):
        load_openretina_model(path, session="c")
    assert load_openretina_model(path, session="b").meta["dataset"] == "b"


def test_contributions_are_complete_over_space_and_time(saved):
    from retcodec.engine.contributions import contributions

    model = load_openretina_model(saved[1])
    windows = torch.randn(6, *model.img_shape).numpy()
    tree = contributions(model, windows, layers=("conv0", "conv1"), steps=64, target="sum_of_rates")
    for layer, n_channels in (("conv0", 3), ("conv1", 4)):
        node = tree[layer].to_dataset()
        assert node["contribution"].sizes["channel"] == n_channels
        total = node["contribution"].sum(("channel", "sign")).values
        delta = tree.to_dataset()["target"].values - tree.to_dataset()["target_baseline"].values
        np.testing.assert_allclose(total, delta, rtol=0.02, atol=1e-3)


def test_silencing_zeroes_core_channels(saved):
    from retcodec.engine.perturb import silence

    net, path = saved
    model = load_openretina_model(path)
    windows = torch.randn(5, *model.img_shape)
    got = silence(model, windows.numpy(), {"conv1": [1, 3]}).values
    hook = net.core.features.layer1.nonlin.register_forward_hook(
        lambda m, a, out: out * torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 4, 1, 1, 1))
    try:
        with torch.no_grad():
            expected = net(windows.unsqueeze(1), data_key="s1")[:, -1].numpy()
    finally:
        hook.remove()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert not np.allclose(got, model(windows).numpy())


@pytest.mark.parametrize("layout", ["cells", "arrays"])
def test_reader_agrees_with_openretina(tmp_path, layout):
    from openretina.data_io.maheswaranathan_2023.responses import load_all_responses
    from openretina.data_io.maheswaranathan_2023.stimuli import load_all_stimuli

    values = write_session(tmp_path / "ganglion_cell_data" / "s1" / "naturalscene.h5", layout,
                           np.random.default_rng(3))
    assert values
    movies = load_all_stimuli(tmp_path, stim_type="naturalscene", normalize_stimuli=False)["s1"]
    for width in (5, 10, 20):
        response = f"firing_rate_{width}ms"
        theirs = load_all_responses(tmp_path, response_type=response, stim_type="naturalscene")["s1"]
        for split, movie, rates in (("train", movies.train, theirs.train),
                                    ("test", movies.test_dict["test"], theirs.test_dict["test"])):
            ours = load_published_recording(tmp_path, session="s1", split=split, response=response)
            np.testing.assert_array_equal(ours["stimulus"].values, movie[0])
            np.testing.assert_array_equal(ours["rate"].values, rates.astype(float))
        ours = load_published_recording(tmp_path, session="s1", response=response)
        np.testing.assert_array_equal(ours["repeats"].values, theirs.test_by_trial_dict["test"].astype(float))


def test_tree_is_what_openretina_reads(tmp_path):
    from openretina.data_io.maheswaranathan_2023.responses import load_all_responses

    src = tmp_path / "src" / "naturalscene.h5"
    write_session(src, "cells", np.random.default_rng(4))
    root = published_tree({"insilico": [src]}, tmp_path / "root")
    assert set(load_all_responses(root, response_type="firing_rate_10ms")) == {"insilico"}


def test_run_inputs_from_a_checkpoint_and_the_tree(saved, tmp_path):
    """``retcodec run --model X.ckpt --data ROOT --session ID`` resolves the model, session and recording.

    (The whole pipeline on the shipped model is ``benchmarks/bench_openretina.py``: minutes, not seconds.)
    """
    from retcodec.cli import build_parser
    from retcodec.io.openretina.model import OpenRetinaModel
    from retcodec.pipeline.config import make_config, resolve_inputs

    write_session(tmp_path / "data" / "ganglion_cell_data" / "s1" / "naturalscene.h5", "cells",
                  np.random.default_rng(5), n_train=120, n_test=90, n_cells=5, size=16)
    args = build_parser().parse_args(["run", "--model", str(saved[1]), "--data", str(tmp_path / "data"),
                                      "--session", "s1"])
    assert args.session == "s1"
    cfg = make_config(str(args.model), str(args.data), session=args.session, out=str(tmp_path / "out"))
    inputs = resolve_inputs(cfg)
    assert isinstance(inputs.model, OpenRetinaModel) and inputs.model.session == "s1"
    assert inputs.recording_path == tmp_path / "data" / "ganglion_cell_data" / "s1" / "naturalscene.h5"
    assert inputs.recording.sizes["cell"] == inputs.model.n_cells == 5
    assert set(inputs.checksums) >= {str(saved[1]), str(inputs.recording_path)}
    with pytest.raises(ConfigurationError, match="no session 'nope'"):
        resolve_inputs(make_config(str(saved[1]), str(tmp_path / "data"), session="nope"))
    with pytest.raises(ConfigurationError, match="unknown layer"):
        resolve_inputs(make_config(str(saved[1]), str(tmp_path / "data"), layers="conv5"))

"""Safe reading of openretina Lightning checkpoints: configs as plain data, payloads and foreign targets refused.

These tests need neither openretina nor omegaconf: the omegaconf classes are imitated by
stand-in modules registered only while the test files are written, so the pickles name
exactly the globals a real openretina checkpoint names.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import torch

from retcodec.errors import CheckpointError, UnsafeCheckpointError
from retcodec.io.openretina.checkpoint import read_lightning_checkpoint
from retcodec.io.openretina.model import load_openretina_model


def _fake_omegaconf(monkeypatch) -> dict[str, type]:
    """Classes pickled under omegaconf's dotted names (state = their __dict__, as omegaconf's)."""
    classes = {}
    for module, names in (("omegaconf.dictconfig", ["DictConfig"]), ("omegaconf.listconfig", ["ListConfig"]),
                          ("omegaconf.nodes", ["AnyNode"]), ("omegaconf.base", ["ContainerMetadata"])):
        mod = types.ModuleType(module)
        for name in names:
            cls = type(name, (), {"__module__": module})
            setattr(mod, name, cls)
            classes[name] = cls
        monkeypatch.setitem(sys.modules, module, mod)
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    return classes


def _node(cls: type, **state) -> object:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _config(c: dict[str, type], content: dict) -> object:
    meta = _node(c["ContainerMetadata"], ref_type=None, key=None, flags={})
    nodes = {}
    for key, value in content.items():
        if isinstance(value, list):
            nodes[key] = _node(c["ListConfig"], _metadata=meta, _parent=None,
                               _content=[_node(c["AnyNode"], _metadata=meta, _parent=None, _val=v) for v in value])
        else:
            nodes[key] = _node(c["AnyNode"], _metadata=meta, _parent=None, _val=value)
    return _node(c["DictConfig"], _metadata=meta, _parent=None, _content=nodes)


def _write(path: Path, hparams: dict, **extra) -> Path:
    torch.save({"state_dict": {"core.w": torch.ones(2, 3)}, "hyper_parameters": hparams, "epoch": 3,
                "pytorch-lightning_version": "2.6.0", **extra}, path)
    return path


class Payload:
    """Unpickling this with plain pickle would run os.system and create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_configs_come_back_as_plain_data(tmp_path, monkeypatch):
    c = _fake_omegaconf(monkeypatch)
    core = _config(c, {"_target_": "openretina.modules.core.base_core.SimpleCoreWrapper", "channels": [1, 4]})
    file = _write(tmp_path / "m.ckpt", {"core": core, "in_shape": (1, 10, 8, 8), "learning_rate": 0.01,
                                        "data_info": {"stim_mean": 0.5, "mean_activity_dict": {"s": torch.ones(3)}}})
    monkeypatch.undo()                                    # the reader never sees the imitation modules
    had_omegaconf = "omegaconf" in sys.modules
    data = read_lightning_checkpoint(file)
    hp = data["hyper_parameters"]
    assert hp["core"] == {"_target_": "openretina.modules.core.base_core.SimpleCoreWrapper", "channels": [1, 4]}
    assert hp["in_shape"] == (1, 10, 8, 8) and hp["learning_rate"] == 0.01
    assert torch.equal(hp["data_info"]["mean_activity_dict"]["s"], torch.ones(3))
    assert torch.equal(data["state_dict"]["core.w"], torch.ones(2, 3)) and data["epoch"] == 3
    assert type(hp["core"]) is dict and type(hp["core"]["channels"]) is list
    assert ("omegaconf" in sys.modules) == had_omegaconf          # reading imports nothing of omegaconf


@pytest.mark.parametrize("where", ["hyper_parameters", "config value", "state_dict"])
def test_payload_is_refused_and_never_runs(tmp_path, monkeypatch, where):
    marker = tmp_path / "pwned"
    c = _fake_omegaconf(monkeypatch)
    hparams = {"core": _config(c, {"_target_": "openretina.x.Y"})}
    extra = {}
    if where == "hyper_parameters":
        hparams["data_info"] = {"stim_mean": Payload(marker)}
    elif where == "config value":
        hparams["core"] = _config(c, {"_target_": Payload(marker)})
    else:
        extra["state_dict"] = {"w": Payload(marker)}
    file = _write(tmp_path / "bad.ckpt", hparams, **extra)
    monkeypatch.undo()
    with pytest.raises(UnsafeCheckpointError, match="os.system|posix.system"):
        read_lightning_checkpoint(file)
    with pytest.raises(UnsafeCheckpointError):
        load_openretina_model(file)
    assert not marker.exists()


@pytest.mark.parametrize("config, message", [
    ({"_target_": "os.system", "command": "touch x"}, "only builds torch modules of the openretina package"),
    ({"_target_": "builtins.eval"}, "openretina package"),
    ({"_target_": "openretina.modules.core.base_core.SimpleCoreWrapper", "_partial_": True}, "hydra key '_partial_'"),
    ({"_target_": "openretina.modules.core.base_core.SimpleCoreWrapper", "x": "${oc.env:HOME}"}, "interpolation"),
    ({"_target_": "openretina.m.C", "inner": [{"_target_": "subprocess.call"}]}, "subprocess.call"),
])
def test_foreign_targets_are_refused_before_anything_is_built(tmp_path, monkeypatch, config, message):
    c = _fake_omegaconf(monkeypatch)
    readout = _config(c, {"_target_": "openretina.modules.readout.multi_readout.MultiGaussianMaskReadout"})
    core = {"_target_": config.pop("_target_"), **config}
    file = _write(tmp_path / "t.ckpt", {"core": core, "readout": readout, "in_shape": (1, 10, 8, 8)})
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=message):
        load_openretina_model(file)


def test_not_a_lightning_checkpoint(tmp_path):
    file = tmp_path / "plain.ckpt"
    torch.save({"model_state_dict": {}, "hyps": {}}, file)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        read_lightning_checkpoint(file)


def test_baccus_loader_points_to_the_openretina_loader(tmp_path):
    from retcodec.io.models import load_model

    file = _write(tmp_path / "m.ckpt", {"in_shape": (1, 10, 8, 8)})
    with pytest.raises(CheckpointError, match="load_openretina_model"):
        load_model(file)

"""Names and paths that would leave the data root, NUL bytes, outputs inside the package (issue 26)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import retcodec
from retcodec.cli import main
from retcodec.errors import ConfigurationError, OutputPathError, RetcodecError
from retcodec.io.bundled import default_model_path
from retcodec.io.checkpoint import load_checkpoint
from retcodec.io.paths import name_in_root, package_dir, user_path
from retcodec.io.recordings import write_recording
from retcodec.io.storage import atomic_path, check_output_file, check_output_folder
from retcodec.pipeline.config import make_config, resolve_inputs


def _split(n_time: int = 60) -> dict:
    rng = np.random.default_rng(0)
    return {"stimulus": rng.integers(0, 256, (n_time, 50, 50)).astype(np.uint8),
            "firing_rate_10ms": rng.random((2, n_time)).astype(np.float32) * 10,
            "binned": rng.integers(0, 2, (2, n_time))}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """``data/`` with data/expt/naturalscene.h5, and a recording outside it."""
    base = tmp_path_factory.mktemp("roots")
    for path in (base / "data" / "expt" / "naturalscene.h5", base / "outside" / "naturalscene.h5",
                 base / "x" / "naturalscene.h5"):
        write_recording(path, train=_split(), test=_split())
    return base


@pytest.mark.parametrize("experiment, stim_type", [
    ("../outside", None), ("..", None), ("expt/../../outside", None), ("expt", "../../outside/naturalscene"),
    ("expt", "../../x/naturalscene"), ("expt", "/abs/naturalscene"), ("ex\x00pt", None),
    ("expt", "natural\x00scene"), ("expt\\..\\..\\outside", None), ("", None), (3, None)])
def test_names_that_leave_the_data_root_are_refused(roots, experiment, stim_type):
    with pytest.raises(ConfigurationError):
        retcodec.load_recording(roots / "data", experiment=experiment, stim_type=stim_type)


def test_absolute_experiment_is_refused(roots):
    with pytest.raises(ConfigurationError, match="not a plain name"):
        retcodec.load_recording(roots / "data", experiment=str(roots / "outside"))


def test_symlink_out_of_the_data_root_is_refused(roots, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.symlink(roots / "outside", data / "linked")
    with pytest.raises(ConfigurationError, match="outside the data root"):
        retcodec.load_recording(data, experiment="linked")
    (data / "expt").mkdir()
    os.symlink(roots / "outside" / "naturalscene.h5", data / "expt" / "naturalscene.h5")
    with pytest.raises(ConfigurationError, match="outside the data root"):
        retcodec.load_recording(data, experiment="expt")
    # the file itself, passed by path, is read wherever it is
    assert retcodec.load_recording(roots / "outside" / "naturalscene.h5").sizes["cell"] == 2


def test_names_inside_the_root_still_load(roots):
    ds = retcodec.load_recording(roots / "data", experiment="expt", stim_type="naturalscene")
    assert ds.attrs["experiment"] == "expt"


@pytest.mark.parametrize("dataset", ["../outside", "/abs/outside", "a/../../outside"])
def test_checkpoint_dataset_that_leaves_the_data_root_is_refused(roots, tmp_path, dataset):
    ck = load_checkpoint(default_model_path())
    ck["hyps"] = {**ck["hyps"], "dataset": dataset}
    ck.pop("dataset", None)
    torch.save(ck, tmp_path / "m.pt")
    cfg = make_config(str(tmp_path / "m.pt"), str(roots / "data"), out=str(tmp_path / "r"), progress=False)
    with pytest.raises(ConfigurationError, match="checkpoint's dataset"):
        resolve_inputs(cfg)


@pytest.mark.parametrize("call", [
    lambda: retcodec.load_recording("data/ex\x00pt/naturalscene.h5"),
    lambda: retcodec.load_model("models/m\x00.pt"),
    lambda: check_output_file("out\x00.nc"),
    lambda: check_output_folder("res\x00ults"),
    lambda: user_path(b"\xff\xfe"),
    lambda: user_path(None)])
def test_nul_bytes_and_non_paths_are_configuration_errors(call):
    with pytest.raises(ConfigurationError):
        call()


def test_outputs_inside_the_installed_package_are_refused(tmp_path, capsys):
    inside = package_dir() / "results"
    with pytest.raises(OutputPathError, match="inside the retcodec package"):
        check_output_folder(inside)
    with pytest.raises(OutputPathError, match="inside the retcodec package"):
        check_output_file(package_dir() / "engine" / "x.nc")
    with pytest.raises(OutputPathError, match="inside the retcodec package"):
        with atomic_path(package_dir() / "x.nc"):
            pass
    assert main(["run", "--out", str(inside), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "inside the retcodec package" in err[0]
    assert not inside.exists()


def test_name_in_root_accepts_plain_names(tmp_path):
    assert name_in_root(tmp_path, "expt", "experiment") == tmp_path / "expt"
    assert name_in_root(tmp_path, "a.b-c", "x", ".h5") == tmp_path / "a.b-c.h5"
    with pytest.raises(RetcodecError):
        name_in_root(tmp_path, ".", "experiment")

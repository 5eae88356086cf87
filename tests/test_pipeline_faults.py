"""Faults around `retcodec run`: interrupted runs resume, busy folders are refused, corrupted
stage files are recomputed, foreign files are ignored, ordinary CLI mistakes get messages."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import retcodec.engine.contributions as engine_contributions
import retcodec.engine.store as engine_store
from conftest import FOREIGN_FIGURE, RUN_CHUNK_SIZE, SMALL, copy_run
from retcodec.cli import main
from retcodec.errors import BusyError, OutputPathError
from retcodec.io.locking import hold_lock
from retcodec.pipeline.run import LOCK_NAME, run


def _contribution_values(folder: Path, layer: str = "conv0") -> np.ndarray:
    with xr.open_datatree(folder / "contributions.nc", engine="h5netcdf") as tree:
        return tree[layer]["contribution"].values.copy()


def test_interrupted_contribution_stage_resumes_with_identical_results(experiment, finished_run, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setattr(engine_contributions, "DEFAULT_CHUNK_SIZE", RUN_CHUNK_SIZE)
    args = (experiment["model"], experiment["paths"]["naturalscene"])
    reference = finished_run["out"]               # the same run, uninterrupted

    saved = []
    original = engine_store.PartialStore.save

    def save_then_die(self, index, result):
        original(self, index, result)
        saved.append(index)
        if len(saved) == 2:
            raise KeyboardInterrupt          # as if the process were killed here

    out = tmp_path / "interrupted"
    monkeypatch.setattr(engine_store.PartialStore, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(*args, out=str(out), **SMALL)
    partial = out / "contributions.nc.partial"
    assert len(list(partial.glob("chunk-*.npz"))) == 2
    assert not (out / "contributions.nc").exists()

    monkeypatch.setattr(engine_store.PartialStore, "save", original)
    resumed = run(*args, out=str(out), **SMALL)
    assert any("resuming from 2 finished chunk" in line for line in resumed["log"])
    assert not partial.exists()
    np.testing.assert_array_equal(_contribution_values(out), _contribution_values(reference))


def test_partial_from_other_parameters_is_discarded_inside_run(experiment, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_contributions, "DEFAULT_CHUNK_SIZE", 10)
    out = tmp_path / "r"
    partial = out / "contributions.nc.partial"
    partial.mkdir(parents=True)
    (partial / "params.json").write_text(json.dumps({"steps": 999, "model": "m", "stimulus": "s",
                                                     "chunks": [[0, 10]]}))     # a 0.2.0 partial folder
    summary = run(experiment["model"], experiment["paths"]["naturalscene"], out=str(out), **SMALL)
    assert any("discarding contributions.nc.partial" in line for line in summary["log"])
    assert (out / "contributions.nc").exists() and not partial.exists()


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_busy_results_folder_is_refused_and_stale_lock_taken_over(experiment, finished_run, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    with hold_lock(out / LOCK_NAME, "results folder"):
        with pytest.raises(BusyError, match=rf"process {os.getpid()} on host {socket.gethostname()}"):
            run(experiment["model"], experiment["paths"]["naturalscene"], out=str(out), **SMALL)
    assert not (out / "contributions.nc").exists()
    # a finished folder in use is refused too, and left exactly as it was
    out = copy_run(finished_run, tmp_path / "busy_finished")
    before = _listing(out)
    with hold_lock(out / LOCK_NAME, "results folder"):
        with pytest.raises(BusyError, match=rf"process {os.getpid()}"):
            run(experiment["model"], experiment["paths"]["naturalscene"], out=str(out), **SMALL)
    assert _listing(out) == before
    # a lock left by a process that no longer exists on this host is taken over with a warning
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                             "started": "earlier", "epoch": 0}))
    with pytest.warns(UserWarning, match="stale lock"):
        summary = run(experiment["model"], experiment["paths"]["naturalscene"], out=str(out), **SMALL)
    assert not (out / LOCK_NAME).exists()
    assert any(line.startswith("[report] skipped (up to date") for line in summary["log"])


def test_lock_from_another_host_is_respected_until_old(tmp_path):
    lock = tmp_path / "x.lock"
    import time
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "now", "epoch": time.time()}))
    with pytest.raises(BusyError, match="host elsewhere"):
        with hold_lock(lock, "thing"):
            pass
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "long ago", "epoch": 0}))
    with pytest.warns(UserWarning, match="stale lock"):
        with hold_lock(lock, "thing"):
            assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_modified_stage_file_is_recomputed_with_its_dependants(experiment, finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "r")
    args = (experiment["model"], experiment["paths"]["naturalscene"])
    before = _contribution_values(out)
    # change one value inside the finished modes file (a valid netCDF file, so only the checksum tells)
    import h5py
    with h5py.File(out / "modes.nc", "a") as f:
        name = next(k for k in f["conv0"] if k == "r2")
        f["conv0"][name][()] = 0.123
    again = run(*args, out=str(out), **SMALL)
    log = "\n".join(again["log"])
    assert "[modes] computing (modes.nc does not match the checksum" in log
    assert "[contributions] skipped (up to date" in log
    assert "[types] computing (modes was recomputed" in log
    with xr.open_dataset(out / "modes.nc", group="conv0", engine="h5netcdf") as ds:
        assert float(ds["r2"]) != pytest.approx(0.123)
    np.testing.assert_array_equal(_contribution_values(out), before)


def test_report_embeds_only_this_runs_figures(finished_run):
    out = finished_run["out"]                 # its figures/ held FOREIGN_FIGURE before the run
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert FOREIGN_FIGURE.split(".")[0] not in html
    assert (out / "figures" / FOREIGN_FIGURE).exists()      # a user's file is never removed


def test_output_paths_are_checked_before_computing(experiment, tmp_path, capsys):
    model, data = str(experiment["model"]), str(experiment["paths"]["naturalscene"])
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        run(model, data, out=str(a_file), **SMALL)
    with pytest.raises(OutputPathError, match="is a file"):
        run(model, data, out=str(a_file / "sub"), **SMALL)
    assert main(["contributions", "--model", model, "--data", data, "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    if os.geteuid() != 0:            # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert main(["contributions", "--model", model, "--data", data, "--out", str(ro / "c.nc")]) == 2
        assert "cannot write" in capsys.readouterr().err


def test_tilde_is_expanded(experiment, finished_run, tmp_path, monkeypatch):
    copy_run(finished_run, tmp_path / "res")
    monkeypatch.setenv("HOME", str(tmp_path))
    summary = run(experiment["model"], experiment["paths"]["naturalscene"], out="~/res", **SMALL)
    assert Path(summary["out"]) == tmp_path / "res" and (tmp_path / "res" / "report.html").exists()
    # the finished run was found under the expanded path: every stage is up to date there
    assert "[contributions] skipped (up to date" in summary["log"][0]
    assert not any("computing" in line for line in summary["log"]), summary["log"]
    assert not Path("~").exists()


@pytest.mark.parametrize("argv, message", [
    (["contributions", "--target", "cell:abc", "--out", "{tmp}/c.nc"], "integer cell id"),
    (["contributions", "--target", "nonsense", "--out", "{tmp}/c.nc"], "--target must be"),
    (["contributions", "--workers", "-1", "--out", "{tmp}/c.nc"], "--workers must be"),
    (["irf", "--cells", "abc", "--out", "{tmp}/i.nc"], "--cells must be"),
    (["modes", "{tmp}/missing.nc", "--out", "{tmp}/m.nc"], "does not exist"),
    (["modes", "{tmp}/not_netcdf.nc", "--out", "{tmp}/m.nc"], "is not a netCDF/HDF5 file"),
    (["types", "{tmp}/missing.nc", "{tmp}/missing2.nc", "--out", "{tmp}/t.nc"], "does not exist"),
])
def test_cli_mistakes_get_a_message_not_a_traceback(argv, message, tmp_path, capsys):
    (tmp_path / "not_netcdf.nc").write_text("hello")
    rc = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_bare_command_prints_help_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    assert "usage: retcodec" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()


def test_failed_run_leaves_no_empty_folder(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(Exception):
        run(tmp_path / "nope.pt", out=str(out), **SMALL)
    assert not out.exists()

"""Outputs: nothing a user wrote is deleted or overwritten, bad out= refused before computing,
a full disk through the Python API, a tampered stage manifest (issue 26)."""
from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import xarray as xr

import retcodec
from retcodec.engine import contributions as engine_contributions
from retcodec.engine.store import PARTIAL_MARKER, discard_partial
from retcodec.errors import ConfigurationError, OutputPathError
from retcodec.pipeline.cache import StageCache, bound_digest
from hardening_fixtures import model, x  # noqa: F401  (fixtures)


def _run(model, x, out, **kw):
    return retcodec.contributions(model, x, steps=2, target="sum_of_rates", out=out, **kw)


@pytest.mark.parametrize("resume", [True, False])
def test_a_user_folder_named_like_the_partial_folder_is_never_deleted(model, x, tmp_path, resume):
    mine = tmp_path / "contributions.nc.partial"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    (mine / "params.json").write_text("{\"my\": \"config\"}")
    with pytest.raises(OutputPathError, match="not made by retcodec"):
        _run(model, x, tmp_path / "contributions.nc", resume=resume)
    assert (mine / "notes.txt").read_text() == "precious"
    assert (mine / "params.json").read_text() == "{\"my\": \"config\"}"
    with pytest.raises(OutputPathError):
        discard_partial(mine)
    assert (mine / "notes.txt").exists()


def test_files_a_user_adds_to_retcodecs_partial_folder_survive(model, x, tmp_path, monkeypatch):
    out = tmp_path / "c.nc"
    monkeypatch.setattr(engine_contributions, "DEFAULT_CHUNK_SIZE", 1)
    calls = []

    def interrupt(index, start, stop):
        calls.append(index)
        if len(calls) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(model, x, out, on_chunk=interrupt)
    partial = tmp_path / "c.nc.partial"
    assert (partial / PARTIAL_MARKER).exists()
    (partial / "mine.txt").write_text("keep me")
    _run(model, x, out)                                         # resumes, finishes, cleans up its own files
    assert out.exists()
    assert sorted(p.name for p in partial.iterdir()) == [PARTIAL_MARKER, "mine.txt"]   # only its own files went


def test_partial_run_with_other_parameters_is_kept_and_reported(model, x, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_contributions, "DEFAULT_CHUNK_SIZE", 1)
    with pytest.raises(KeyboardInterrupt):
        _run(model, x, tmp_path / "c.nc", on_chunk=lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(ConfigurationError, match="different parameters"):
        retcodec.contributions(model, x, steps=3, target="sum_of_rates", out=tmp_path / "c.nc")
    assert len(list((tmp_path / "c.nc.partial").glob("chunk-*.npz"))) == 1


def test_bad_out_is_refused_before_any_computation(model, x, tmp_path, monkeypatch):
    def no_compute(*args, **kwargs):
        raise AssertionError("computed before checking out=")
    monkeypatch.setattr(engine_contributions, "Engine", no_compute)
    (tmp_path / "folder.nc").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is a folder"):
        _run(model, x, tmp_path / "folder.nc")
    with pytest.raises(OutputPathError, match="is a file"):
        _run(model, x, tmp_path / "file" / "c.nc")
    with pytest.raises(ConfigurationError, match="control characters"):
        _run(model, x, str(tmp_path / "c\x00.nc"))
    mine = tmp_path / "mine.nc"
    mine.write_bytes(b"the user's own data")
    with pytest.raises(OutputPathError, match="not written by retcodec"):
        _run(model, x, mine)
    assert mine.read_bytes() == b"the user's own data"


def test_out_in_a_folder_that_does_not_exist_yet(model, x, tmp_path):
    out = tmp_path / "new" / "sub" / "c.nc"
    _run(model, x, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["c.nc"]      # no lock, partial or temp left


def test_an_earlier_retcodec_output_is_replaced(model, x, tmp_path):
    out = tmp_path / "c.nc"
    _run(model, x, out)
    first = out.read_bytes()
    _run(model, x, out)
    assert out.exists() and len(out.read_bytes()) > 0 and first[:8] == out.read_bytes()[:8]


def test_full_disk_through_the_python_api_is_an_output_error(model, x, tmp_path, monkeypatch):
    def full(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(xr.DataTree, "to_netcdf", full)
    with pytest.raises(OutputPathError, match="No space left on device"):
        _run(model, x, tmp_path / "c.nc")
    assert not (tmp_path / "c.nc").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# ----------------------------------------------------------------------------- stage manifest
def _cache(out):
    return StageCache(out, {"steps": 4}, {"in.h5": "abc"}, "in.h5")


def test_manifest_checksums_are_bound_to_their_stage_and_file(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "modes.nc").write_bytes(b"modes")
    (out / "irfs.nc").write_bytes(b"irfs")
    cache = _cache(out)
    cache.record("modes", [out / "modes.nc"], 1.0)
    cache.record("irfs", [out / "irfs.nc"], 1.0)
    assert _cache(out).freshness("modes").current and _cache(out).freshness("irfs").current
    # swap the files and hand-edit the manifest so that each entry carries the other's checksum
    (out / "modes.nc").write_bytes(b"irfs")
    (out / "irfs.nc").write_bytes(b"modes")
    data = json.loads((out / ".stages.json").read_text())
    data["modes"]["files"] = {"modes.nc": data["irfs"]["files"]["irfs.nc"]}
    data["irfs"]["files"] = {"irfs.nc": bound_digest("modes", "modes.nc", out / "irfs.nc")}
    (out / ".stages.json").write_text(json.dumps(data))
    assert not _cache(out).freshness("modes").current
    assert not _cache(out).freshness("irfs").current
    # an entry pointing at another stage's file, or outside the folder, is not trusted either
    (out / "irfs.nc").write_bytes(b"irfs")
    data["modes"]["files"] = {"irfs.nc": bound_digest("modes", "irfs.nc", out / "irfs.nc")}
    data["irfs"]["files"] = {"../outside.nc": "0" * 64}
    (out / ".stages.json").write_text(json.dumps(data))
    fresh = _cache(out)
    assert "not a file of this stage" in fresh.freshness("modes").reason
    assert "not a file of this stage" in fresh.freshness("irfs").reason
    assert fresh.files("irfs") == [] and fresh.files("modes") == []


@pytest.mark.parametrize("entry", [{"files": []}, {"files": None}, {"files": {}}, {"seconds": "x"},
                                   {"files": {"modes.nc": 5}, "seconds": [1]}])
def test_malformed_manifest_entries_are_stale_not_errors(tmp_path, entry):
    out = tmp_path / "r"
    out.mkdir()
    (out / "modes.nc").write_bytes(b"modes")
    cache = _cache(out)
    (out / ".stages.json").write_text(json.dumps({"modes": {"signature": cache.signature("modes"), **entry}}))
    fresh = _cache(out)
    assert not fresh.freshness("modes").current
    assert fresh.seconds("modes") is None


def test_run_never_overwrites_files_it_did_not_write(tmp_path, capsys):
    from retcodec.cli import main

    out = tmp_path / "results"
    out.mkdir()
    (out / "contributions.nc").write_text("my own netCDF notes")
    assert main(["run", "--out", str(out), "--quick", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "contributions.nc" in err[0] and "did not write" in err[0]
    assert (out / "contributions.nc").read_text() == "my own netCDF notes"


def test_foreign_report_is_detected_by_the_stage_cache(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    cache = _cache(out)
    (out / "report.html").write_text("<html>mine</html>")
    (out / "hypotheses.txt").write_text("mine")
    assert cache.foreign("report") == ["report.html", "hypotheses.txt"]
    (out / "report.html").write_text("<!DOCTYPE html><html><head><title>retcodec report</title>")
    cache.record("report", [out / "report.html", out / "hypotheses.txt"], 1.0)
    cache.invalidate("report", "test")
    assert _cache(out).foreign("report") == []             # the ledger remembers what retcodec wrote
    (out / "figures").write_text("a file where the figures folder goes")
    assert cache.foreign("figures") == ["figures"]


# ------------------------------------------------------------------ writers that replaced user files (round 2b)
def test_checkpoint_writers_never_replace_a_file_retcodec_did_not_write(model, tmp_path):
    from published_fixtures import write_published_checkpoint

    published = tmp_path / "published.pt"
    write_published_checkpoint(published, n_cells=3, dataset=None)
    text = tmp_path / "notes.txt"
    text.write_text("precious")
    for path in (published, text):
        before = path.read_bytes()
        with pytest.raises(OutputPathError, match="not written by retcodec"):
            retcodec.save_model(model, path)
        assert path.read_bytes() == before
    ours = retcodec.save_model(model, tmp_path / "m.pt")
    retcodec.save_model(model, ours)                             # its own checkpoint: replaced
    assert retcodec.load_model(ours).meta["cells"] == model.meta["cells"]


def test_fit_checks_out_before_fitting(tmp_path, monkeypatch):
    from retcodec import fitting

    monkeypatch.setattr(fitting, "_zscore_train", lambda *a: (_ for _ in ()).throw(AssertionError("fitted")))
    user = tmp_path / "notes.txt"
    user.write_text("precious")
    rec = xr.Dataset({"stimulus": (("time", "y", "x"), np.zeros((3, 2, 2))), "rate": (("cell", "time"), np.zeros((1, 3)))})
    with pytest.raises(OutputPathError, match="not written by retcodec"):
        retcodec.fit(rec, out=user)
    assert user.read_text() == "precious"


def test_recording_and_interneuron_writers_never_replace_a_user_file(tmp_path):
    user = tmp_path / "mine.h5"
    user.write_bytes(b"precious")
    with pytest.raises(OutputPathError, match="not written by retcodec"):
        retcodec.write_recording(user, train=_split(), test=_split())
    with pytest.raises(OutputPathError, match="not written by retcodec"):
        retcodec.write_interneurons(user, {"boxes": _boxes()})
    assert user.read_bytes() == b"precious"
    ours = retcodec.write_recording(tmp_path / "ours.h5", train=_split(), test=_split())
    retcodec.write_recording(ours, train=_split(), test=_split())   # its own: replaced


def test_simulate_refuses_before_simulating_over_a_user_recording(tmp_path, monkeypatch):
    from retcodec.insilico import regenerate

    (tmp_path / "insilico").mkdir()
    (tmp_path / "insilico" / "naturalscene.h5").write_bytes(b"my recording")
    with pytest.raises(OutputPathError, match="not written by retcodec"):
        regenerate.simulate_version(tmp_path, 0, version=3)      # refused at once, before the simulation
    assert (tmp_path / "insilico" / "naturalscene.h5").read_bytes() == b"my recording"


@pytest.mark.parametrize("command", ["evaluate", "modes", "irf"])
def test_cli_out_never_replaces_a_user_file(tmp_path, capsys, command):
    from retcodec.cli import main

    user = tmp_path / "mine.nc"
    user.write_bytes(b"precious")
    args = {"evaluate": ["evaluate", "--out", str(user)],
            "modes": ["modes", str(tmp_path / "c.nc"), "--out", str(user)],
            "irf": ["irf", "--out", str(user), "--times", "0"]}[command]
    assert main(args) == 2
    assert "not written by retcodec" in capsys.readouterr().err
    assert user.read_bytes() == b"precious"


def test_benchmark_keeps_user_files_in_its_simulation_folder(tmp_path, monkeypatch):
    from retcodec.benchmark import runner
    from retcodec.insilico import family

    data = runner.retina_folder(tmp_path, 3) / "data"
    (data / "insilico").mkdir(parents=True)
    (data / runner.SIMULATION_MARKER).write_text("x")
    (data / "my_notes.txt").write_text("precious")
    ours = retcodec.write_recording(data / "insilico" / "naturalscene.h5", train=_split(), test=_split())
    monkeypatch.setattr(family, "simulate_family_retina", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        runner.run_retina(3, tmp_path, quick=True)
    assert (data / "my_notes.txt").read_text() == "precious"       # the user's file stays
    assert not ours.exists()                                         # the stale simulation went


def test_benchmark_refuses_a_simulation_folder_that_is_a_symlink(tmp_path):
    from retcodec.benchmark import runner
    from retcodec.errors import RetcodecError

    user = tmp_path / "userdata"
    user.mkdir()
    (user / runner.SIMULATION_MARKER).write_text("x")
    (user / "a.h5").write_text("p")
    folder = runner.retina_folder(tmp_path / "b", 3)
    folder.mkdir(parents=True)
    (folder / "data").symlink_to(user)
    with pytest.raises(RetcodecError, match="symbolic link"):
        runner.run_retina(3, tmp_path / "b", quick=True)
    assert (user / "a.h5").read_text() == "p"


def _split():
    from recording_fixtures import published_split
    return {k: v for k, v in published_split(2, 60).items() if k != "time"}


def _boxes():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (50, 50, 50)).astype(np.uint8), rng.standard_normal((2, 50)).astype(np.float32)


@pytest.mark.parametrize("name", ["benchmark.nc", "summary.html"])
def test_benchmark_refuses_a_user_file_at_its_summary_names_before_any_retina(tmp_path, monkeypatch, name):
    from retcodec.benchmark import runner

    monkeypatch.setattr(runner, "run_retina", lambda *a, **k: pytest.fail("a retina was started"))
    (tmp_path / name).write_bytes(b"precious")
    with pytest.raises(OutputPathError, match="not written by retcodec"):
        runner.benchmark(out=tmp_path, seeds=[0], quick=True, progress=False)
    assert (tmp_path / name).read_bytes() == b"precious"

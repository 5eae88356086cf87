"""`retcodec run` end to end on a tiny in-silico experiment: files, provenance, resume, errors."""
from __future__ import annotations

import json

import h5py
import pytest

from retcodec.cli import main
from retcodec.errors import ConfigurationError, MissingDataError
from retcodec.pipeline.run import run


from conftest import QUICK



def test_run_writes_every_output_with_provenance_and_resumes(experiment, tmp_path):
    out = tmp_path / "results"
    kw = dict(out=str(out), interneurons=[str(experiment["paths"]["bipolars"])], **QUICK)
    summary = run(experiment["model"], experiment["paths"]["naturalscene"], **kw)
    for name in ("contributions.nc", "modes.nc", "cell_types.nc", "irfs.nc", "interneurons.nc", "experiments.nc",
                 "statistics.nc", "report.html", "hypotheses.txt"):
        assert (out / name).exists(), name
    assert any(out.glob("figures/*.png")) and any(out.glob("figures/*.svg"))
    for name in ("contributions.nc", "modes.nc", "cell_types.nc", "irfs.nc", "statistics.nc"):
        with h5py.File(out / name, "r") as f:
            checksums = json.loads(f.attrs["input_checksums"])
            assert str(experiment["model"]) in checksums, name
            assert "retcodec_version" in f.attrs and "run_parameters" in f.attrs
    report = (out / "report.html").read_text()
    for heading in ("Overview", "Methods in brief", "Experiments and hypotheses", "Cell types"):
        assert heading in report, heading
    assert "data:image/png;base64," in report
    assert "in-silico retina" in report

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nc")}
    again = run(experiment["model"], experiment["paths"]["naturalscene"], **kw)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nc")} == mtimes   # all skipped
    assert any(line.startswith("[contributions] skipped (up to date") for line in again["log"])
    # a rerun keeps the original compute times
    assert again["timings"]["contributions"] == pytest.approx(summary["timings"]["contributions"], abs=0.01)

    changed = run(experiment["model"], experiment["paths"]["naturalscene"], **{**kw, "steps": 5})
    new = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nc")}
    assert all(new[k] != mtimes[k] for k in ("contributions.nc", "modes.nc", "cell_types.nc"))
    assert new["interneurons.nc"] == mtimes["interneurons.nc"]       # does not depend on steps...
    assert changed["out"] == str(out)


def test_run_rejects_bad_arguments(experiment, tmp_path):
    data = experiment["paths"]["naturalscene"]
    with pytest.raises(ConfigurationError, match="unknown layer"):
        run(experiment["model"], data, out=str(tmp_path), layers="conv7", **QUICK)
    with pytest.raises(ConfigurationError, match="steps"):
        run(experiment["model"], data, out=str(tmp_path), **{**QUICK, "steps": 0})
    with pytest.raises(MissingDataError, match="does not exist"):
        run(tmp_path / "nope.pt", data, out=str(tmp_path), **QUICK)
    with pytest.raises(ConfigurationError, match="unknown run option"):
        run(experiment["model"], data, out=str(tmp_path), colour="red")


def test_cli_reports_errors_cleanly(experiment, tmp_path, capsys):
    rc = main(["evaluate", "--model", str(tmp_path / "missing.pt"), "--data",
               str(experiment["paths"]["naturalscene"])])
    assert rc == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(experiment["model"]), "--data",
                 str(experiment["paths"]["naturalscene"])]) == 0
    assert "median" in capsys.readouterr().out

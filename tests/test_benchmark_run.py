"""The benchmark runner: resumable steps, verified files, protected folders, summaries.

The steps' science (simulate, fit, run) is replaced by small stand-ins here, so these tests
check the runner itself in seconds; `.ci/run` runs the real quick family end to end
(`tools/check_benchmark.py`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from retcodec.benchmark import benchmark
from retcodec.benchmark.runner import SIMULATION_MARKER, retina_folder, run_retina
from retcodec.errors import ConfigurationError, RetcodecError

SEEDS = (1000, 1001)


def _fake_scores(results: Path, recording: Path) -> xr.Dataset:
    from retcodec.benchmark.scores import METRICS, score_clusterings
    seed = int(json.loads(Path(recording).read_text())["seed"])
    rng = np.random.default_rng(seed)
    true = np.repeat(["a", "b", "c"], 3)
    rows = score_clusterings({"primary": rng.permutation(np.repeat([0, 1, 2], 3))}, true)
    methods = [f"celltypes/{m}" for m in rows]
    table = np.full((len(methods), len(METRICS)), np.nan)
    for i, m in enumerate(rows):
        table[i, 0], table[i, 1] = rows[m]["ari"], rows[m]["k_error"]
    return xr.Dataset({"score": (("method", "metric"), table), "test_r": ("cell", rng.uniform(0, 1, 9)),
                       "feve": ("cell", rng.uniform(0, 1, 9))},
                      coords={"method": methods, "metric": list(METRICS), "cell": np.arange(9),
                              "cell_type": ("cell", true)})


@pytest.fixture
def fake_steps(monkeypatch):
    """Stand-ins that write small files where the real steps write theirs, and count calls."""
    calls = {"simulate": 0, "fit": 0, "run": 0}

    def simulate(out, seed, ranges=None, progress=False):
        calls["simulate"] += 1
        rec = Path(out) / "insilico" / "naturalscene.h5"
        rec.parent.mkdir(parents=True, exist_ok=True)
        rec.write_text(json.dumps({"seed": seed}))
        (Path(out) / "interneurons").mkdir(exist_ok=True)
        return {"naturalscene": rec}

    def load_recording(path, split="test", **kw):
        return {"path": str(path), "split": split}

    def fit(train, test=None, config=None, out=None, device="cpu", **kw):
        calls["fit"] += 1
        Path(out).write_text(f"model of {train['path']} seed {config.seed}")
        return None, xr.Dataset({"loss": ("epoch", [1.0, 0.5])})

    def run(model, data, out, **kw):
        calls["run"] += 1
        Path(out).mkdir(parents=True, exist_ok=True)
        for f in ("cell_types.nc", "experiments.nc", "interneurons.nc", "modes.nc", "statistics.nc"):
            (Path(out) / f).write_text(f"{f} of {model}")

    monkeypatch.setattr("retcodec.insilico.family.simulate_family_retina", simulate)
    monkeypatch.setattr("retcodec.io.recordings.load_recording", load_recording)
    monkeypatch.setattr("retcodec.fitting.fit", fit)
    monkeypatch.setattr("retcodec.pipeline.run.run", run)
    monkeypatch.setattr("retcodec.benchmark.scores.score_retina", _fake_scores)
    return calls


def test_benchmark_writes_labelled_file_page_and_figures(tmp_path, fake_steps):
    written = benchmark(tmp_path, seeds=SEEDS, quick=True, progress=False)
    root = xr.load_dataset(written["benchmark"], engine="h5netcdf")
    assert root["score"].dims == ("retina", "method", "metric")
    assert root["retina"].values.tolist() == ["tuning-1000", "tuning-1001"]
    assert root["seed"].values.tolist() == list(SEEDS)
    from retcodec.benchmark.runner import QUICK_RANGES
    from retcodec.insilico.family import draw_retina, replace_ranges
    expected = [draw_retina(s, replace_ranges(**QUICK_RANGES)).parameters["n_types"] for s in SEEDS]
    assert root["n_types"].values.tolist() == expected
    ari = root["score"].sel({"method": "celltypes/truth_labels", "metric": "ari"}).values
    np.testing.assert_allclose(ari, 1.0)
    summary = root["summary"].sel({"method": "celltypes/truth_labels", "metric": "ari"})
    assert float(summary.sel(statistic="median")) == pytest.approx(1.0)
    assert int(summary.sel(statistic="n")) == 2
    page = Path(written["summary"]).read_text()
    assert "Targets" in page and "Cell types" in page and "data:image/png" in page
    assert all(Path(f).is_file() for f in written["figures"])
    md = Path(written["markdown"]).read_text()
    import re
    assert re.search(r"\| cell types \| primary \| ari \| -?[01]\.\d\d \[-?[01]\.\d\d, -?[01]\.\d\d\] \|", md)
    assert "\\|true effect\\|" in md or "true effect" not in md
    assert "| target | value | met |" in md and "tuning-1000" in md
    tree = xr.open_datatree(written["benchmark"], engine="h5netcdf")
    assert tree["retinas/tuning-1000"].to_dataset().sizes["cell"] == 9
    assert fake_steps == {"simulate": 2, "fit": 2, "run": 2}


def test_rerun_reuses_steps_and_reproduces_the_file_exactly(tmp_path, fake_steps):
    first = benchmark(tmp_path, seeds=SEEDS, quick=True, progress=False)
    before = Path(first["benchmark"]).read_bytes()
    again = benchmark(tmp_path, seeds=SEEDS, quick=True, progress=False)
    assert fake_steps == {"simulate": 2, "fit": 2, "run": 2}         # nothing recomputed
    assert Path(again["benchmark"]).read_bytes() == before


def test_a_changed_file_redoes_its_step_and_the_later_ones_only(tmp_path, fake_steps):
    run_retina(1000, tmp_path, quick=True)
    model = retina_folder(tmp_path, 1000) / "model.pt"
    model.write_text("tampered")
    messages: list[str] = []
    run_retina(1000, tmp_path, quick=True, say=messages.append)
    assert fake_steps == {"simulate": 1, "fit": 2, "run": 2}
    assert any("simulate skipped" in m for m in messages)
    assert model.read_text().startswith("model of")


def test_a_foreign_data_folder_is_never_deleted(tmp_path, fake_steps):
    folder = retina_folder(tmp_path, 1000)
    mine = folder / "data" / "my_notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("precious")
    with pytest.raises(RetcodecError, match="not written by retcodec"):
        run_retina(1000, tmp_path, quick=True)
    assert mine.read_text() == "precious"
    assert not (folder / "data" / SIMULATION_MARKER).exists()
    assert fake_steps["simulate"] == 0


def test_our_own_stale_simulation_is_replaced(tmp_path, fake_steps):
    run_retina(1000, tmp_path, quick=True)
    data = retina_folder(tmp_path, 1000) / "data"
    (data / "insilico" / "naturalscene.h5").write_text("half-written")
    run_retina(1000, tmp_path, quick=True)
    assert fake_steps["simulate"] == 2 and (data / SIMULATION_MARKER).is_file()


def test_steps_manifest_of_any_shape_is_ignored_not_fatal(tmp_path):
    from retcodec.benchmark.runner import StepManifest
    folder = tmp_path / "r"
    folder.mkdir()
    for text in ("[1, 2]", "\"hello\"", "{not json", json.dumps({"fit": {"files": [1]}}),
                 json.dumps({"fit": {"key": "k", "files": {"../../etc/passwd": "0"}}})):
        (folder / "steps.json").write_text(text)
        assert not StepManifest(folder).current("fit", "k")


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="unknown split"):
        benchmark(tmp_path, split="train", retinas=2, progress=False)
    with pytest.raises(ConfigurationError, match="workers"):
        benchmark(tmp_path, retinas=2, workers=-1, progress=False)
    with pytest.raises(ConfigurationError, match="distinct"):
        benchmark(tmp_path, seeds=[3, 3], progress=False)


def test_an_ensemble_per_retina_fits_its_members_and_hands_them_to_the_run(tmp_path, fake_steps, monkeypatch):
    seen = {}

    def run(model, data, out, **kw):
        seen["ensemble"] = kw.get("ensemble")
        Path(out).mkdir(parents=True, exist_ok=True)
        for f in ("cell_types.nc", "experiments.nc", "interneurons.nc", "modes.nc", "statistics.nc"):
            (Path(out) / f).write_text(f"{f} of {model}")

    monkeypatch.setattr("retcodec.pipeline.run.run", run)
    run_retina(1000, tmp_path, members=3)
    folder = retina_folder(tmp_path, 1000)
    assert fake_steps["fit"] == 3
    assert [(folder / f).read_text().rsplit(" ", 1)[-1] for f in ("model.pt", "model_m1.pt", "model_m2.pt")] == \
        ["1000", "1001", "1002"]                                      # member k: seed + k
    assert seen["ensemble"] == (str(folder / "model_m1.pt"), str(folder / "model_m2.pt"))
    run_retina(1000, tmp_path, members=1)                             # one model: refitted, no members given
    assert fake_steps["fit"] == 4 and seen["ensemble"] == ()
    with pytest.raises(ConfigurationError, match="members"):
        benchmark(tmp_path, retinas=2, members=0, progress=False)

"""Release hygiene: one version everywhere, extras as documented, tutorials committed without
outputs, the bundled files that the wheel ships, and the import paths kept by the IRF split."""
from __future__ import annotations

import configparser
import glob
import json
import re
from pathlib import Path

import pytest

import retcodec as rc

ROOT = Path(__file__).resolve().parents[1]


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    return cfg


def _extra(cfg: configparser.ConfigParser, name: str) -> set[str]:
    lines = cfg["options.extras_require"][name].split("\n")
    return {re.split(r"[<>=\[ ]", line.strip())[0] for line in lines if line.strip()}


def test_version_agrees_with_citation_and_changelog():
    citation = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert re.search(rf"^version: {re.escape(rc.__version__)}$", citation, flags=re.M), \
        f"CITATION.cff does not carry version {rc.__version__}"
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    first = re.search(r"^## (\S+)", changelog, flags=re.M)
    assert first is not None and first.group(1) == rc.__version__


def test_metadata_names_licence_and_python():
    meta = _setup_cfg()["metadata"]
    assert meta["license"] == "BSD-3-Clause" and meta["license_files"] == "LICENSE"
    assert "BSD 3-Clause" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert _setup_cfg()["options"]["python_requires"].startswith(">=3.")


def test_extras_hold_what_ci_and_the_docs_need():
    cfg = _setup_cfg()
    assert {"dask", "imagenet", "docs", "test"} <= set(cfg["options.extras_require"])
    # the test extra holds every optional package a test uses, so `.[test]` (README, CI) runs them all
    assert {"pytest", "captum", "dask"} <= _extra(cfg, "test")
    assert _extra(cfg, "imagenet") <= _extra(cfg, "test")
    assert {"mkdocs", "mkdocstrings", "mkdocs-jupyter", "nbclient", "ipykernel"} <= _extra(cfg, "docs")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install --quiet -e ".[test]"' in ci and "python -m pytest -q" in ci


def test_wheel_data_files_match_the_bundled_default():
    """Every bundled file is listed in [options.data_files] (the wheel's share/retcodec) and every
    pattern there matches a file, so `pip install retcodec` carries the bundled default."""
    entries = _setup_cfg()["options.data_files"]
    patterns = [p.strip() for value in entries.values() for p in value.split("\n") if p.strip()]
    shipped = {Path(f) for p in patterns for f in glob.glob(str(ROOT / p))}
    assert all(glob.glob(str(ROOT / p)) for p in patterns), patterns
    bundled = {p for kind in ("models", "datasets") for p in (ROOT / kind).rglob("*") if p.is_file()
               and p.suffix in (".pt", ".nc", ".h5")}
    assert bundled and bundled <= shipped, sorted(map(str, bundled - shipped))


def test_tutorials_are_committed_without_outputs():
    notebooks = sorted((ROOT / "docs" / "tutorials").glob("*.ipynb"))
    assert len(notebooks) >= 3
    for path in notebooks:
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert nb["nbformat"] == 4, path.name
        assert nb["cells"][0]["cell_type"] == "markdown" and nb["cells"][0]["source"], path.name
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, \
                    f"{path.name} holds outputs: clear them before committing"


def test_the_notebook_runner_finds_every_tutorial():
    import importlib.util
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "tools" / "run_notebooks.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    assert runner.notebooks([]) == sorted((ROOT / "docs" / "tutorials").glob("*.ipynb"))
    with pytest.raises(SystemExit, match="no such notebook"):
        runner.notebooks([str(ROOT / "docs" / "tutorials" / "missing.ipynb")])


def test_irf_names_keep_their_old_import_paths():
    from retcodec.analysis import irf, irf_gradients, irf_inputs, rank1
    for name, home in [("rank1", rank1), ("rank1_matrices", rank1), ("first_layer_transpose", irf_gradients),
                       ("model_cells", irf_inputs), ("resolve_stimulus", irf_inputs),
                       ("window_shape", irf_inputs)]:
        assert getattr(irf, name) is getattr(home, name), name
    assert rc.rank1 is rank1.rank1 and rc.irf is irf.irf
    from retcodec.defaults import DT
    assert irf.DT == DT


def test_run_accepts_one_interneuron_folder_as_a_path(tmp_path):
    from retcodec.pipeline.config import make_config
    cfg = make_config(None, None, out=str(tmp_path / "r"), interneurons=tmp_path / "interneurons")
    assert cfg.interneurons == (str(tmp_path / "interneurons"),)
    cfg = make_config(None, None, out=str(tmp_path / "r"), interneurons=[tmp_path / "a", "b"])
    assert cfg.interneurons == (str(tmp_path / "a"), "b")

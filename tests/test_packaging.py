"""Bundled files are found only where retcodec itself put them, never in a look-alike folder."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import retcodec

PACKAGE = Path(retcodec.__file__).resolve().parent


def _installed_copy(tmp_path: Path) -> Path:
    """retcodec copied into a fake site-packages, as a wheel installs it (no setup.cfg beside it),
    next to decoy top-level ``datasets`` and ``models`` packages holding files of the same names."""
    site = tmp_path / "site-packages"
    shutil.copytree(PACKAGE, site / "retcodec", ignore=shutil.ignore_patterns("__pycache__"))
    for kind, name in (("datasets", "insilico/naturalscene.h5"), ("models", "insilico_naturalscene.pt")):
        decoy = site / kind / name
        decoy.parent.mkdir(parents=True, exist_ok=True)
        decoy.write_bytes(b"decoy")
        (site / kind / "__init__.py").write_text("")
    return site


def _run(site: Path, prefix: Path, code: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import sys
        sys.prefix = {str(prefix)!r}
        from retcodec.io import bundled
        {code}
    """)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(site)}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=site)


def test_a_decoy_datasets_package_is_never_used(tmp_path):
    site = _installed_copy(tmp_path)
    result = _run(site, tmp_path / "empty_prefix", """
        assert bundled.source_checkout() is None
        try:
            print(bundled.bundled_dir("datasets"))
        except bundled.MissingDataError as err:
            print("MISSING", err)
    """)
    assert result.returncode == 0, result.stderr
    assert "MISSING" in result.stdout and "site-packages/datasets" not in result.stdout.split("MISSING")[0]


def test_the_wheel_share_folder_is_used(tmp_path):
    site = _installed_copy(tmp_path)
    prefix = tmp_path / "prefix"
    share = prefix / "share" / "retcodec" / "datasets" / "insilico"
    share.mkdir(parents=True)
    (share / "naturalscene.h5").write_bytes(b"real")
    result = _run(site, prefix, "print(bundled.default_recording_path())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(share / "naturalscene.h5")


def test_the_checkout_is_recognised_by_its_own_setup_cfg():
    from retcodec.io import bundled
    root = bundled.source_checkout()
    assert root is not None and (root / "retcodec" / "__init__.py").resolve() == PACKAGE / "__init__.py"


def test_regenerate_refuses_to_bundle_from_an_installed_package(tmp_path):
    site = _installed_copy(tmp_path)
    result = _run(site, tmp_path / "prefix", """
        from retcodec.insilico.regenerate import regenerate
        from retcodec.errors import ConfigurationError
        try:
            regenerate(work={str(tmp_path / 'work')!r}, bundle=True)
        except ConfigurationError as err:
            print("REFUSED", err)
    """.replace("{str(tmp_path / 'work')!r}", repr(str(tmp_path / "work"))))
    assert result.returncode == 0, result.stderr
    assert "REFUSED" in result.stdout and "--no-bundle" in result.stdout
    assert not (tmp_path / "work").exists()          # refused before any simulation

"""Where the bundled default (in-silico retina models and recordings) lives.

Search order for each resource kind (``"models"`` or ``"datasets"``):

1. the folder named by ``RETCODEC_MODELS`` / ``RETCODEC_DATASETS``;
2. the source checkout (``<repo>/models``, ``<repo>/datasets``), which is what an
   editable install (``pip install -e .``) sees. A checkout is recognised by
   retcodec's own ``setup.cfg`` (``name = retcodec``) next to this package, never by
   a folder name alone: an installed package has no such file, so a foreign
   top-level ``datasets``/``models`` package in ``site-packages`` is never used;
3. ``<sys.prefix>/share/retcodec/<kind>``, where a wheel installs them
   (``[options.data_files]`` in ``setup.cfg``).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from retcodec.errors import MissingDataError

__all__ = ["source_checkout", "bundled_dir", "bundled_path", "default_model_path", "default_data_root", "default_recording_path", "default_interneuron_dir", "DEFAULT_MODEL", "DEFAULT_WHITENOISE_MODEL", "DEFAULT_EXPERIMENT", "DEFAULT_STIM_TYPE", "DEFAULT_INTERNEURONS"]

_ENV = {"models": "RETCODEC_MODELS", "datasets": "RETCODEC_DATASETS"}

#: names of the bundled files, relative to their kind's folder
DEFAULT_MODEL = "insilico_naturalscene.pt"
DEFAULT_WHITENOISE_MODEL = "insilico_whitenoise.pt"
DEFAULT_EXPERIMENT = "insilico"         # <datasets>/insilico/<stim>.h5
DEFAULT_STIM_TYPE = "naturalscene"
DEFAULT_INTERNEURONS = "interneurons"   # <datasets>/interneurons/*.h5


def _candidates(kind: str) -> list[Path]:
    out: list[Path] = []
    env = os.environ.get(_ENV[kind])
    if env:
        out.append(Path(env).expanduser())
    checkout = source_checkout()
    if checkout is not None:
        out.append(checkout / kind)
    out.append(Path(sys.prefix) / "share" / "retcodec" / kind)
    return out


def source_checkout() -> Path | None:
    """The repository root when retcodec runs from its own source checkout, else None."""
    root = Path(__file__).resolve().parents[2]
    setup = root / "setup.cfg"
    try:
        text = setup.read_text(encoding="utf-8") if setup.is_file() else ""
    except OSError:
        return None
    is_ours = re.search(r"^name\s*=\s*retcodec\s*$", text, flags=re.M) is not None
    return root if is_ours and (root / "retcodec" / "__init__.py").is_file() else None


def bundled_dir(kind: str) -> Path:
    """Folder holding the bundled ``kind`` ("models" or "datasets") files."""
    if kind not in _ENV:
        raise ValueError(f"kind must be 'models' or 'datasets', not {kind!r}")
    for cand in _candidates(kind):
        if cand.is_dir() and any(cand.iterdir()):
            return cand
    tried = ", ".join(str(c) for c in _candidates(kind))
    raise MissingDataError(
        f"no bundled {kind} folder found (looked in: {tried}). Install retcodec from "
        f"its source checkout (pip install -e .) or a wheel built from it, or set "
        f"{_ENV[kind]} to a folder holding the files."
    )


def bundled_path(kind: str, name: str) -> Path:
    """Path of one bundled file or folder; a clear error if it is missing."""
    root = bundled_dir(kind)
    path = root / name
    if not path.exists():
        have = sorted(p.name for p in root.iterdir())
        raise MissingDataError(
            f"bundled {kind} resource {name!r} is missing from {root} (it holds: {have}). "
            f"Regenerate the bundled default with `retcodec regenerate` "
            f"(see README) or point retcodec at your own files."
        )
    return path


def default_model_path() -> Path:
    return bundled_path("models", DEFAULT_MODEL)


def default_data_root() -> Path:
    """The bundled data root: ``<root>/<experiment>/<stim_type>.h5`` as published."""
    return bundled_dir("datasets")


def default_recording_path(stim_type: str = DEFAULT_STIM_TYPE) -> Path:
    return bundled_path("datasets", f"{DEFAULT_EXPERIMENT}/{stim_type}.h5")


def default_interneuron_dir() -> Path:
    return bundled_path("datasets", DEFAULT_INTERNEURONS)

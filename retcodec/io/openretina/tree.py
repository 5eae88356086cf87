"""The published dataset's folder tree: ``<root>/ganglion_cell_data/<session>/<stim_type>.h5``.

The Maheswaranathan et al. (2023) recordings are distributed (and read by openretina's
``maheswaranathan_2023`` loaders) as one folder per recording session under
``ganglion_cell_data``; each file holds ``train`` and ``test`` splits in the layout of
``docs/formats.md``. :func:`published_tree` puts recordings into that tree;
:func:`session_file` finds one session's file in it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping

from retcodec.errors import ConfigurationError, MissingDataError
from retcodec.io.storage import atomic_path

__all__ = ["TREE_FOLDER", "published_tree", "tree_root", "session_file", "sessions"]

#: the folder of the distributed dataset that holds one folder per session
TREE_FOLDER = "ganglion_cell_data"


def published_tree(recordings: Mapping[str, Iterable[str | os.PathLike]], root: str | os.PathLike) -> Path:
    """Put recording files into ``<root>/ganglion_cell_data/<session>/<file name>``.

    Parameters
    ----------
    recordings : session id -> recording files in the published layout (e.g. the
        bundled ``datasets/insilico/naturalscene.h5``); each is hard-linked where the
        file system allows it, else copied (atomically).
    root : the folder to hold ``ganglion_cell_data`` (created).

    Returns
    -------
    ``root`` as a Path: what openretina's loaders and ``retcodec run --data`` take.
    """
    root = Path(root).expanduser()
    for session, files in recordings.items():
        if not session or "/" in session or session in (".", ".."):
            raise ConfigurationError(f"session id {session!r} must be a plain folder name")
        folder = root / TREE_FOLDER / session
        folder.mkdir(parents=True, exist_ok=True)
        for file in map(Path, files):
            if not file.is_file():
                raise MissingDataError(f"recording {str(file)!r} does not exist")
            target = folder / file.name
            if target.exists() and target.stat().st_size == file.stat().st_size:
                continue
            with atomic_path(target) as tmp:
                try:
                    os.link(file, tmp)
                except OSError:
                    shutil.copyfile(file, tmp)
    return root


def tree_root(path: str | os.PathLike) -> Path | None:
    """The ``ganglion_cell_data`` folder at or under ``path``; None when there is none."""
    path = Path(path).expanduser()
    for candidate in (path / TREE_FOLDER, path):
        if candidate.name == TREE_FOLDER and candidate.is_dir():
            return candidate
    return None


def sessions(path: str | os.PathLike) -> list[str]:
    """The session folders of the tree at ``path`` (sorted); empty when ``path`` is no tree."""
    folder = tree_root(path)
    if folder is None:
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def session_file(path: str | os.PathLike, session: str, stim_type: str | None = None) -> Path:
    """``<root>/ganglion_cell_data/<session>/<stim_type>.h5`` (or the session's only file).

    Raises
    ------
    MissingDataError
        No tree at ``path``, no such session (the known ones are named), or no such
        stimulus file (the session's files are named).
    """
    folder = tree_root(path)
    if folder is None:
        raise MissingDataError(f"{str(path)!r} holds no '{TREE_FOLDER}' folder; pass the folder of the "
                               f"distributed dataset (the one that contains {TREE_FOLDER}/<session>/)")
    session_dir = folder / str(session)
    if not session_dir.is_dir():
        raise MissingDataError(f"no session {session!r} under {str(folder)!r}; the sessions there are "
                               f"{sessions(folder)}")
    files = sorted(session_dir.glob("*.h5"))
    if stim_type is not None:
        matches = [f for f in files if f.stem == stim_type or f.stem.endswith(stim_type)]
    else:
        matches = files
    if len(matches) != 1:
        raise MissingDataError(
            f"session {session!r} holds {[f.name for f in files]}; "
            + (f"none (or several) match stim_type {stim_type!r}" if stim_type else "name the stim_type (--stim-type)"))
    return matches[0]

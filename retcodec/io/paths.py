"""The one check of every path a user or a file hands to retcodec.

* :func:`user_path`: a path argument (``str`` or ``os.PathLike``) as a :class:`~pathlib.Path`,
  ``~`` expanded; NUL bytes and other control characters refused.
* :func:`name_in_root`: a *name* (an experiment, a stimulus type, a dataset read from a
  checkpoint) joined under a root folder; refused when it is absolute, holds ``..`` or a
  path separator, or when the joined path (symlinks followed) resolves outside the root.
* :func:`check_not_in_package`: outputs never go inside the installed retcodec package.

Each refusal is a :class:`~retcodec.errors.ConfigurationError` (or
:class:`~retcodec.errors.OutputPathError` for outputs) that says what to pass instead.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from retcodec.errors import ConfigurationError, OutputPathError

__all__ = ["user_path", "name_in_root", "check_not_in_package", "package_dir"]


def _check_text(text: str, what: str) -> None:
    bad = sorted({f"{ord(c):#04x}" for c in text if ord(c) < 0x20 or ord(c) == 0x7F})
    if bad:
        raise ConfigurationError(f"{what} {text!r} holds control characters ({', '.join(bad)}, e.g. a NUL "
                                 f"byte); give a plain path")


def user_path(path: Any, what: str = "path") -> Path:
    """``path`` as an expanded :class:`Path`; refuses non-paths, empty paths and control characters."""
    if isinstance(path, bytes):
        try:
            path = path.decode()
        except UnicodeDecodeError:
            raise ConfigurationError(f"{what} {path!r} is not valid UTF-8; give a str path") from None
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigurationError(f"{what} must be a path (str or pathlib.Path), got {type(path).__name__}")
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if not text.strip():
        raise ConfigurationError(f"{what} is empty; give a file or folder")
    _check_text(text, what)
    return Path(os.path.expanduser(text))


def name_in_root(root: Path, name: Any, what: str, suffix: str = "") -> Path:
    """``root / (name + suffix)``, refusing names that leave ``root``.

    ``name`` must be one plain path component (no ``/``, ``\\``, ``..``, not absolute, no
    control characters), and the joined path, with symlinks resolved, must lie inside
    ``root`` (resolved). ``what`` names the value in messages (e.g. ``"experiment"``).
    """
    if not isinstance(name, str):
        raise ConfigurationError(f"{what} must be a name (str), got {type(name).__name__} {name!r:.60}")
    _check_text(name, what)
    if (not name.strip() or name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name)
            or (os.sep in name) or (os.altsep and os.altsep in name)):
        raise ConfigurationError(
            f"{what} {name!r} is not a plain name: it must be one folder or file name inside "
            f"{root} (no '/', '\\', '..', not absolute); to read a file elsewhere, pass its path directly")
    joined = root / f"{name}{suffix}"
    resolved_root = root.resolve()
    try:
        inside = joined.resolve().is_relative_to(resolved_root)
    except (OSError, RuntimeError):            # a symlink loop
        inside = False
    if not inside:
        raise ConfigurationError(
            f"{what} {name!r} leads to {joined.resolve()}, outside the data root {resolved_root} "
            f"(a symbolic link?); pass that file's path directly if you mean to read it")
    return joined


def package_dir() -> Path:
    """The folder of the installed (or checked-out) ``retcodec`` package."""
    return Path(__file__).resolve().parents[1]


def check_not_in_package(path: Path, what: str) -> None:
    """Refuse an output location inside the retcodec package itself."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError):
        return
    pkg = package_dir()
    if target == pkg or target.is_relative_to(pkg):
        raise OutputPathError(f"{what} {path} lies inside the retcodec package ({pkg}); writing there "
                              f"would damage the installation. Choose a folder of your own")

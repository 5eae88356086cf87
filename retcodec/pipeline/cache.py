"""Which stages of a run are up to date: a verified manifest of the results folder.

``<out>/.stages.json`` records, for every finished stage, the signature it was made
with (its parameters and the checksums of the run's inputs), the sha256 of every file
it wrote, how long it took and when it finished. A stage is trusted only when its
signature matches *and* every file it wrote still has its recorded checksum; otherwise
it is recomputed, with everything downstream of it, and the reason is said.

Each recorded checksum is bound to its stage and file name (``sha256(stage, name, sha256
of the file)``), and a stage may list only its own files (``STAGE_FILES``) inside the
results folder: a hand-edited manifest that points one stage's entry at another
stage's file, or at a file outside the folder, makes that stage stale, never trusted.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from retcodec.io.provenance import sha256
from retcodec.io.storage import atomic_path
from retcodec.pipeline.config import DEPENDS, ENSEMBLE_INPUT, STAGE_FILES, STAGES, STAGE_PARAMETERS

#: the stages that read the ensemble's member files
ENSEMBLE_READERS = ("experiments", "figures", "report")

__all__ = ["MANIFEST", "LEDGER", "StageCache", "Freshness", "bound_digest", "own_file"]

MANIFEST = ".stages.json"
#: manifest key listing every file retcodec ever wrote in the folder (kept when a stage is invalidated)
LEDGER = "_written"
#: files a stage writes besides ``STAGE_FILES[stage]`` (or the files under that folder)
_EXTRA_FILES = {"report": ("hypotheses.txt",)}


def bound_digest(stage: str, name: str, path: Path) -> str:
    """The checksum recorded for ``name`` of ``stage``: the file's sha256 bound to both."""
    return hashlib.sha256(f"{stage}\0{name}\0{sha256(path)}".encode()).hexdigest()


def _is_retcodec_report(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return b"<title>retcodec report</title>" in f.read(4096)
    except OSError:
        return False


def own_file(stage: str, name: Any) -> bool:
    """Whether ``name`` (relative to the results folder) is one a stage may write."""
    if not isinstance(name, str) or not name or name.startswith(("/", "\\")) or "\\" in name:
        return False
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return False
    own = STAGE_FILES.get(stage)
    return name == own or name.startswith(f"{own}/") or name in _EXTRA_FILES.get(stage, ())


@dataclass(frozen=True)
class Freshness:
    """Whether a stage's outputs can be reused, and why not."""

    current: bool
    reason: str


class StageCache:
    """The manifest of one results folder, and the set of stages known to be stale."""

    def __init__(self, out: Path, params: Mapping[str, Any], checksums: Mapping[str, str],
                 recording_path: str, force: bool = False) -> None:
        self.out = Path(out)
        self.params = dict(params)
        self.checksums = dict(checksums)
        self.recording_path = str(recording_path)
        self.stale: dict[str, str] = {s: "--force given" for s in STAGES} if force else {}
        self.entries: dict[str, dict[str, Any]] = self._read()

    # ------------------------------------------------------------------ manifest
    @property
    def path(self) -> Path:
        return self.out / MANIFEST

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def _write(self) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True), encoding="utf-8")

    # ------------------------------------------------------------------ signatures
    def signature(self, stage: str) -> str:
        """What a stage's results depend on, as a canonical JSON string."""
        params, inputs = self.params, self.checksums
        keys = STAGE_PARAMETERS.get(stage)
        if keys is not None:
            params = {k: params.get(k) for k in keys}
        if stage == "interneurons":          # reads the interneuron files, not the recording
            inputs = {k: v for k, v in inputs.items() if k != self.recording_path}
        if stage not in ENSEMBLE_READERS:    # the ensemble's members are read by the experiments only
            inputs = {k: v for k, v in inputs.items() if not k.startswith(ENSEMBLE_INPUT)}
        return json.dumps({"stage": stage, "params": params, "inputs": inputs}, sort_keys=True, default=str)

    # ------------------------------------------------------------------ queries
    def freshness(self, stage: str) -> Freshness:
        """Can ``stage``'s recorded outputs be reused?"""
        if stage in self.stale:
            return Freshness(False, self.stale[stage])
        entry = self.entries.get(stage)
        if entry is None:
            return Freshness(False, "not computed yet")
        if entry.get("signature") != self.signature(stage):
            return Freshness(False, "parameters or inputs changed")
        files = entry.get("files")
        if not isinstance(files, dict) or not files:
            return Freshness(False, "its manifest entry lists no files")
        for name, digest in files.items():
            if not own_file(stage, name):
                return Freshness(False, f"the manifest lists {name!r}, which is not a file of this stage")
            path = self.out / name
            if not path.is_file() or path.is_symlink():
                return Freshness(False, f"{name} is missing")
            if bound_digest(stage, name, path) != digest:
                return Freshness(False, f"{name} does not match the checksum recorded when it was written "
                                        f"(modified or corrupted)")
        return Freshness(True, "up to date")

    def files(self, stage: str) -> list[Path]:
        """The files a finished stage wrote (relative names resolved in the results folder)."""
        files = self.entries.get(stage, {}).get("files")
        return [self.out / name for name in (files if isinstance(files, dict) else {}) if own_file(stage, name)]

    def foreign(self, stage: str) -> list[str]:
        """Existing files at ``stage``'s output names that retcodec did not provably write here
        (not in the manifest's ledger, not a netCDF file with retcodec's provenance)."""
        from retcodec.io.storage import is_retcodec_file

        ledger = set(self.entries.get(LEDGER, {}) or {})
        for entry in self.entries.values():           # manifests of earlier versions: no ledger
            files = entry.get("files") if isinstance(entry, dict) else None
            ledger |= set(files) if isinstance(files, dict) else set()
        found = []
        for name in (STAGE_FILES[stage], *_EXTRA_FILES.get(stage, ())):
            path = self.out / name
            if not (path.exists() or path.is_symlink()):
                continue
            if path.is_dir() and not path.is_symlink() and name == STAGE_FILES.get("figures"):
                continue                                  # figures/: only retcodec's own names are written
            if path.is_symlink() or not path.is_file():
                found.append(name)
            elif name not in ledger and not (name.endswith(".nc") and is_retcodec_file(path)) \
                    and not (name == STAGE_FILES["report"] and _is_retcodec_report(path)):
                found.append(name)
        return found

    def seconds(self, stage: str) -> float | None:
        value = self.entries.get(stage, {}).get("seconds")
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            return None
        return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None

    # ------------------------------------------------------------------ updates
    def invalidate(self, stage: str, reason: str) -> list[str]:
        """``stage`` is being recomputed: every stage that reads it (transitively) becomes stale.

        Returns the newly stale dependants.
        """
        marked = {stage}
        while True:
            new = {s for s, deps in DEPENDS.items() if marked & set(deps)} - marked
            if not new:
                break
            marked |= new
        newly = [s for s in STAGES if s in marked - {stage} and s not in self.stale]
        for s in newly:
            self.stale[s] = f"{stage} was recomputed"
        self.entries.pop(stage, None)
        self._write()
        return newly

    def record(self, stage: str, files: Iterable[Path], seconds: float) -> None:
        """``stage`` finished: remember its signature, the checksums of its files and its time."""
        self.entries[stage] = {
            "signature": self.signature(stage),
            "files": {name: bound_digest(stage, name, Path(p))
                      for p in files for name in [Path(p).relative_to(self.out).as_posix()]},
            "seconds": round(float(seconds), 3),
            "finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        ledger = self.entries.get(LEDGER)
        self.entries[LEDGER] = {**(ledger if isinstance(ledger, dict) else {}),
                                **{name: True for name in self.entries[stage]["files"]}}
        self.stale.pop(stage, None)
        self._write()

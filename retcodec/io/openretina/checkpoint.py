"""Safe reading of openretina's Lightning checkpoints (``.ckpt``): weights and hyper-parameters, no code.

A Lightning checkpoint is a ``torch.save`` zip holding ``state_dict`` (the weights),
``hyper_parameters`` (the model's constructor arguments) and training state (``loops``,
``optimizer_states`` ...). openretina writes the core and readout configurations as
omegaconf ``DictConfig`` objects, which is why openretina itself reads its checkpoints
with ``weights_only=False``. retcodec reads them with
:func:`retcodec.io.checkpoint.load_checkpoint` (``torch.load(weights_only=True)``, the
file's bytes verified first) and these extra allow-listed names, each mapped to a
stand-in defined here that only records the pickled state (omegaconf is never imported
and none of its code runs):

=======================================================  =====================================
dotted name in the pickle                                stand-in
=======================================================  =====================================
``omegaconf.dictconfig.DictConfig``, ``...ListConfig``   :class:`ConfigNode` (``_content``)
``omegaconf.nodes.AnyNode`` and the typed value nodes    :class:`ConfigNode` (``_val``)
``omegaconf.base.ContainerMetadata``, ``...Metadata``    :class:`ConfigMetadata` (discarded)
``typing.Any``                                           a marker
``collections.defaultdict``                              an empty ``dict`` (items follow)
``builtins.dict``, ``builtins.list``, ``builtins.int``   ``dict``, ``list``, ``int`` (protocol-2
(``__builtin__.long``)                                   spellings of plain containers)
=======================================================  =====================================

:func:`read_lightning_checkpoint` returns plain Python: configs become dicts and lists.
Anything else a file asks for (``os.system``, ``builtins.eval``, any other class) is
refused with :class:`~retcodec.errors.UnsafeCheckpointError` before anything is built.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from retcodec.errors import CheckpointError, UnsafeCheckpointError
from retcodec.io.checkpoint import load_checkpoint
from retcodec.io.safe_pickle import plain_values

__all__ = ["ConfigNode", "ConfigMetadata", "lightning_globals", "read_lightning_checkpoint", "plain_config",
           "LIGHTNING_KEYS"]

#: the keys a Lightning checkpoint of a model must hold
LIGHTNING_KEYS = ("state_dict", "hyper_parameters")
#: omegaconf node classes whose pickled state is a value (``_val``) or a container (``_content``)
_NODE_CLASSES = ("dictconfig.DictConfig", "listconfig.ListConfig", "nodes.AnyNode", "nodes.StringNode",
                 "nodes.IntegerNode", "nodes.FloatNode", "nodes.BooleanNode", "nodes.BytesNode",
                 "nodes.PathNode")
_METADATA_CLASSES = ("base.ContainerMetadata", "base.Metadata")
#: state keys of an omegaconf node that are kept; the rest (parent, metadata, flags) is dropped
_NODE_STATE_KEYS = ("_content", "_val")


class _AnyType:
    """Stands for ``typing.Any`` (a type annotation in omegaconf metadata)."""

    def __repr__(self) -> str:
        return "typing.Any"


ANY = _AnyType()


class ConfigNode:
    """Stands for an omegaconf node while unpickling: keeps ``_content`` or ``_val``, nothing else."""

    __slots__ = ("content", "value", "kind")

    def __init__(self) -> None:
        self.content: Any = None
        self.value: Any = None
        self.kind = "empty"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafeCheckpointError(f"an omegaconf node with a pickled state of type {type(state).__name__} "
                                        f"(a dict is expected); the file is crafted or corrupt")
        if "_content" in state:
            self.content, self.kind = state["_content"], "container"
        elif "_val" in state:
            self.value, self.kind = state["_val"], "value"


class ConfigMetadata:
    """Stands for omegaconf's metadata dataclasses while unpickling; their state is discarded."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        return None


def _empty_dict(*args: Any) -> dict:
    """``collections.defaultdict(factory)`` as a plain dict (the factory is never called)."""
    return {}


def lightning_globals() -> dict[str, Any]:
    """The extra allow-list for Lightning checkpoints: dotted name -> stand-in."""
    names: dict[str, Any] = {f"omegaconf.{name}": ConfigNode for name in _NODE_CLASSES}
    names.update({f"omegaconf.{name}": ConfigMetadata for name in _METADATA_CLASSES})
    names.update({"typing.Any": ANY, "collections.defaultdict": _empty_dict, "builtins.dict": dict,
                  "builtins.list": list, "builtins.int": int, "builtins.long": int})
    return names


def plain_config(value: Any, depth: int = 0) -> Any:
    """``value`` with every :class:`ConfigNode` replaced by plain dicts, lists and values."""
    if depth > 64:
        raise CheckpointError("the checkpoint's hyper-parameters nest more than 64 levels; the file is "
                              "crafted or corrupt")
    if isinstance(value, ConfigNode):
        value = value.content if value.kind == "container" else value.value
    if isinstance(value, ConfigNode):
        return plain_config(value, depth + 1)
    if isinstance(value, dict):
        return {plain_config(k, depth + 1): plain_config(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_config(v, depth + 1) for v in value)
    if isinstance(value, (ConfigMetadata, _AnyType)):
        return None
    return value


def read_lightning_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A Lightning ``.ckpt`` as plain Python, read safely (see the module docstring).

    Returns
    -------
    dict with ``state_dict`` (name -> CPU tensor), ``hyper_parameters`` (plain dicts,
    lists and values; tensors stay tensors) and every other key of the file.

    Raises
    ------
    UnsafeCheckpointError
        The file asks for anything outside the allow-lists (nothing from it ran).
    CorruptCheckpointError, MissingDataError, UnreadableFileError
        As :func:`retcodec.io.checkpoint.load_checkpoint`.
    CheckpointError
        Not a Lightning checkpoint (no ``state_dict`` / ``hyper_parameters``).
    """
    data = load_checkpoint(Path(path), extra_globals=lightning_globals())
    missing = [k for k in LIGHTNING_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"{str(path)!r} is not a Lightning checkpoint of a model: it lacks "
                              f"{missing} (keys: {sorted(map(str, data))[:10]})")
    data = plain_values(plain_config(data))
    if not isinstance(data["hyper_parameters"], Mapping):
        raise CheckpointError(f"'hyper_parameters' of {str(path)!r} is a "
                              f"{type(data['hyper_parameters']).__name__}, not a dict")
    return data

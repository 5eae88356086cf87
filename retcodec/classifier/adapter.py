"""Wrap any torch image classifier so that :func:`retcodec.engine.contributions` can analyse it.

The contributions engine needs ``model.layers``: an ordered mapping from layer
name to the module whose output is the hidden layer. :class:`ClassifierAdapter`
builds it from dotted module names of the wrapped network (``"layer3.1"``,
``"features.4"``), and records each layer's layout for the engine's reduction:

* ``(B, C, H, W)`` (or any ``(B, C, ...)``): ``"channels"``, summed over space;
* ``(B, tokens, dim)``: ``"tokens"``, summed over tokens (channel = ``dim``);
* ``(B, C)``: a dense layer, nothing to sum.

:func:`load_classifier` accepts an ``nn.Module``, a TorchScript file, or a
``"package.module:factory"`` entry point (called without arguments).
"""
from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from retcodec.errors import ConfigurationError, MissingDataError, ShapeError
from .images import DEFAULT_NORMALIZATION, Normalization

__all__ = ["ClassifierAdapter", "load_classifier", "module_names"]


def module_names(net: nn.Module) -> list[str]:
    """Dotted names of every submodule of ``net`` (candidates for ``layers``)."""
    return [name for name, _ in net.named_modules() if name]


class ClassifierAdapter(nn.Module):
    """A classifier ``net`` with the hidden layers ``layers`` exposed as ``self.layers``.

    Parameters
    ----------
    net : the classifier; ``net(x)`` maps images ``(B, C, H, W)`` to logits ``(B, n_classes)``.
    layers : dotted submodule names of ``net`` (see :func:`module_names`).
    token_layers : names among ``layers`` whose output is ``(B, tokens, dim)``; found
        automatically by :meth:`check` when it sees a 3-D hidden tensor.
    class_names : optional names of the ``n_classes`` outputs.
    normalization : how the network wants its [0, 1] RGB input normalised: a
        :class:`~retcodec.classifier.images.Normalization`, a name (``"imagenet"``, the
        default; ``"[-1,1]"``; ``"[0,1]"``) or ``(mean, std)``. Image folders read for this
        model use it; arrays given directly must already be normalised.

    Attributes
    ----------
    layers : OrderedDict name -> module (in the order given).
    layer_layouts : dict name -> ``"channels"`` | ``"tokens"`` (read by the engine).
    normalization : the :class:`~retcodec.classifier.images.Normalization`.
    hidden_shapes_ : dict name -> hidden shape without the batch dim (after :meth:`check`).
    n_classes_ : number of outputs (after :meth:`check`).
    """

    def __init__(self, net: nn.Module, layers: Sequence[str] | str,
                 token_layers: Sequence[str] = (), class_names: Sequence[str] | None = None,
                 normalization: Any = DEFAULT_NORMALIZATION) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ConfigurationError(f"the classifier must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net
        names = [layers] if isinstance(layers, str) else list(layers)
        if not names or len(set(names)) != len(names):
            raise ConfigurationError(f"layers must be at least one distinct module name, got {names}")
        modules = dict(net.named_modules())
        available = [n for n in modules if n]
        unknown = [n for n in names if n not in available]
        if unknown:
            shown = ", ".join(available[:40]) + (" ..." if len(available) > 40 else "")
            raise ConfigurationError(f"unknown layer(s) {unknown}: not submodules of "
                                     f"{type(net).__name__}; available: {shown}")
        bad_tokens = [n for n in token_layers if n not in names]
        if bad_tokens:
            raise ConfigurationError(f"token_layers {bad_tokens} are not among layers {names}")
        # a plain dict attribute (not a ModuleDict): the modules stay registered under net only
        self.layers: OrderedDict[str, nn.Module] = OrderedDict((n, modules[n]) for n in names)
        self.layer_layouts = {n: ("tokens" if n in token_layers else "channels") for n in names}
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.normalization = Normalization.from_spec(normalization)
        self.hidden_shapes_: dict[str, tuple[int, ...]] = {}
        self.n_classes_: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` of images ``x (B, C, H, W)``."""
        return self.net(x)

    @torch.no_grad()
    def check(self, x: torch.Tensor | np.ndarray) -> "ClassifierAdapter":
        """Run a probe batch ``x (B, C, H, W)``; check outputs and hidden layers, set layouts.

        Raises :class:`ShapeError` when the network does not return logits
        ``(B, n_classes)`` with ``n_classes >= 2``, or a layer's output is not a
        tensor of 2 to 5 dims, or a layer was not run (e.g. a TorchScript
        module, whose submodules' hooks do not fire).
        """
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
        if x.ndim != 4:
            raise ShapeError(f"probe images must be (batch, channels, height, width), got {tuple(x.shape)}")
        captured: dict[str, Any] = {}
        handles = [m.register_forward_hook(self._capture(n, captured)) for n, m in self.layers.items()]
        was_training = self.training
        try:
            self.eval()
            out = self(x)
        finally:
            for h in handles:
                h.remove()
            self.train(was_training)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ShapeError(f"the classifier must return logits (batch, n_classes) for images of "
                             f"shape {tuple(x.shape)}, got {shape}; wrap the network so that forward "
                             f"returns the logits tensor")
        if out.shape[1] < 2:
            raise ShapeError(f"the classifier returns {out.shape[1]} output(s); CODEC's classifier "
                             f"targets need logits of >= 2 classes")
        if self.class_names is not None and len(self.class_names) != out.shape[1]:
            raise ShapeError(f"{len(self.class_names)} class names given for {out.shape[1]} outputs")
        for name in self.layers:
            self._set_layout(name, captured.get(name))
        self.n_classes_ = int(out.shape[1])
        return self

    @staticmethod
    def _capture(name: str, store: dict[str, Any]):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            store[name] = output
        return hook

    def _set_layout(self, name: str, h: Any) -> None:
        if h is None:
            raise ShapeError(f"layer {name!r} was not run by the forward pass (a TorchScript module's "
                             f"submodules cannot be hooked; load the eager model instead)")
        if not isinstance(h, torch.Tensor) or not 2 <= h.ndim <= 5:
            shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise ShapeError(f"layer {name!r} must output one tensor (batch, channel, ...) or "
                             f"(batch, tokens, dim), got {shape}")
        if h.ndim == 3 and self.layer_layouts[name] == "channels":
            self.layer_layouts[name] = "tokens"
        self.hidden_shapes_[name] = tuple(h.shape[1:])

    def n_channels(self, name: str) -> int:
        """Channels of layer ``name`` (after :meth:`check`)."""
        shape = self.hidden_shapes_[name]
        return int(shape[-1] if self.layer_layouts[name] == "tokens" else shape[0])


def _from_entry_point(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigurationError(f"cannot import the model entry point {spec!r}: {err}") from None
    net = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    if not isinstance(net, nn.Module):
        raise ConfigurationError(f"entry point {spec!r} must give a torch.nn.Module, got {type(net).__name__}")
    return net


class _ScriptedPart(nn.Module):
    """Calls one submodule of a TorchScript model from Python, so that a forward hook sees its output."""

    def __init__(self, part: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.part = part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.part(x)


def unroll_torchscript(module: torch.jit.ScriptModule) -> nn.Module:
    """A Python ``nn.Sequential`` over the children of a scripted/traced ``nn.Sequential``.

    Forward hooks do not fire inside TorchScript, so hidden layers of a scripted
    model cannot be read. A model that was an ``nn.Sequential`` (nested ones
    too) is rebuilt as Python Sequentials whose leaves call the scripted parts:
    the same computation, with the same dotted layer names, and hookable. Other
    scripted models are returned as they are (their layers cannot be analysed).
    """
    if getattr(module, "original_name", None) != "Sequential":
        return module
    from collections import OrderedDict
    parts = OrderedDict()
    for name, child in module.named_children():
        parts[name] = (unroll_torchscript(child) if getattr(child, "original_name", None) == "Sequential"
                       else _ScriptedPart(child))
    return nn.Sequential(parts)


def load_classifier(spec: nn.Module | str | Path, layers: Sequence[str] | str,
                    token_layers: Sequence[str] = (), class_names: Sequence[str] | None = None,
                    device: str | torch.device = "cpu",
                    normalization: Any = DEFAULT_NORMALIZATION) -> ClassifierAdapter:
    """A :class:`ClassifierAdapter` (eval mode, on ``device``) from a module, file or entry point.

    ``spec``: an ``nn.Module``; a TorchScript file (``torch.jit.save``; analysable when the
    scripted model is an ``nn.Sequential``, see :func:`unroll_torchscript`); or
    ``"package.module:factory"`` whose ``factory()`` returns the module (or the
    module object itself). ``normalization``: see :class:`ClassifierAdapter`.
    """
    if isinstance(spec, ClassifierAdapter):
        spec = spec.net
    if isinstance(spec, nn.Module):
        net = spec
    elif isinstance(spec, (str, Path)) and Path(spec).is_file():
        try:
            net = torch.jit.load(str(spec), map_location=device)
        except (RuntimeError, ValueError, OSError, EOFError) as err:
            raise ConfigurationError(f"{spec} is not a TorchScript file ({str(err).splitlines()[0][:200] if str(err) else type(err).__name__}); give a "
                                     f"'package.module:factory' entry point instead") from None
        for param in net.parameters():          # analyses never need parameter gradients
            param.requires_grad_(False)
        net = unroll_torchscript(net)
    elif isinstance(spec, str) and ":" in spec:
        net = _from_entry_point(spec)
    elif isinstance(spec, (str, Path)):
        raise MissingDataError(f"no model file at {spec} (and it is not a 'package.module:factory' "
                               f"entry point)")
    else:
        raise ConfigurationError(f"model must be an nn.Module, a TorchScript file or an entry point, "
                                 f"got {type(spec).__name__}")
    return ClassifierAdapter(net, layers, token_layers, class_names, normalization).to(device).eval()


def load_weights(net: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``state_dict`` file (``torch.save(model.state_dict())``) into ``net``, safely.

    The file is read by :func:`retcodec.io.checkpoint.load_checkpoint` (allow-listed
    ``torch.load(weights_only=True)``: nothing is executed, damaged zips refused); a file
    that is not a mapping of names to tensors (a pickle of other objects, text, an ``.npz``)
    or that does not fit ``net`` raises a :class:`~retcodec.errors.CheckpointError`.
    """
    from retcodec.errors import CheckpointError
    from retcodec.io.checkpoint import load_checkpoint, resolve_checkpoint_path

    file = resolve_checkpoint_path(path)
    state = load_checkpoint(file)
    if isinstance(state, Mapping) and "model_state_dict" in state and isinstance(state["model_state_dict"], Mapping):
        state = state["model_state_dict"]
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"weights file {file} does not hold a state_dict (names -> tensors), but "
                              f"{type(state).__name__}; save it with torch.save(model.state_dict(), path)")
    try:
        net.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"weights file {file} does not fit the model: "
                              f"{str(err).splitlines()[0][:300]}") from None
    return net

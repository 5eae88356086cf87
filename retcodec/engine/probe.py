"""One checked forward pass of any ``nn.Module`` before real work: the validation layer for models.

:func:`probe_model` runs the model on one input with forward hooks on the named layers
and turns what would otherwise surface later as a raw torch error into a
:class:`~retcodec.errors.RetcodecError` that says what to fix:

* an input the model cannot take (wrong size, wrong channel count) -> :class:`ShapeError`;
* a model whose ``forward`` returns a tuple, list or dict instead of one
  ``(batch, n_outputs)`` tensor -> :class:`ShapeError`;
* a named layer that ``forward`` never runs -> :class:`ConfigurationError` listing the
  layers that do run;
* a named layer whose output is not one tensor ``(batch, channel, ...)`` -> :class:`ShapeError`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from retcodec.errors import ConfigurationError, RetcodecError, ShapeError

__all__ = ["probe_model", "describe_output", "check_module", "MAX_STEPS"]

#: the most integration steps a fixed grid may have (each adds a forward and backward pass per window)
MAX_STEPS = 10_000

#: exceptions a forward pass raises for an input it cannot take
_INPUT_ERRORS = (RuntimeError, ValueError, IndexError, TypeError, AssertionError)


def check_module(model: Any, what: str = "model") -> nn.Module:
    """``model`` if it is a ``torch.nn.Module``, else :class:`ConfigurationError` saying what to pass."""
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"{what} must be a torch.nn.Module (e.g. retcodec.load_model('model.pt')), "
                                 f"got {type(model).__name__} {model!r:.60}")
    return model


def describe_output(output: Any) -> str:
    """``"tuple of 2 (Tensor (1, 3), Tensor (1, 4, 46, 46))"``-style description of a module output."""
    if isinstance(output, torch.Tensor):
        return f"Tensor {tuple(output.shape)}"
    if isinstance(output, (tuple, list)):
        inner = ", ".join(describe_output(o) for o in output[:4]) + (", ..." if len(output) > 4 else "")
        return f"{type(output).__name__} of {len(output)} ({inner})"
    if isinstance(output, Mapping):
        return f"{type(output).__name__} with keys {list(output)[:6]}"
    return type(output).__name__


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def probe_model(model: nn.Module, x: torch.Tensor, layers: Mapping[str, nn.Module] | None = None,
                expect_2d: bool = True) -> dict[str, torch.Size]:
    """Run ``model`` once on ``x`` (a batch of one or two inputs, on the model's device).

    ``layers``: name -> module whose output is the layer. Returns name -> output shape.
    ``expect_2d``: the model output must be ``(batch, n_outputs)``.
    """
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = dict(layers or {})
    seen: dict[str, Any] = {}

    def hook(name: str):
        def record(module: nn.Module, args: Any, output: Any) -> None:
            seen.setdefault(name, output if isinstance(output, torch.Tensor) else describe_output(output))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        with _eval_mode(model):
            out = model(x)
    except RetcodecError:
        raise
    except _INPUT_ERRORS as err:
        raise ShapeError(f"the model cannot take inputs of shape {tuple(x.shape[1:])} (per sample): "
                         f"{type(err).__name__}: {_first_line(err)}. Give inputs of the size the model "
                         f"was built for") from None
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor):
        raise ShapeError(f"the model's forward returns {describe_output(out)}, not one tensor of outputs; "
                         f"wrap it in a module whose forward returns only the outputs (batch, n_outputs), "
                         f"e.g. lambda x: model(x)[0]")
    if expect_2d and out.ndim != 2:
        raise ShapeError(f"the model returns shape {tuple(out.shape)}; retcodec needs one vector of outputs "
                         f"per sample, (batch, n_outputs)")
    if not out.is_floating_point():
        raise ShapeError(f"the model returns {out.dtype} outputs; they must be floating point")
    shapes: dict[str, torch.Size] = {}
    for name, module in layers.items():
        if name not in seen:
            ran = [n for n in layers if n in seen]
            raise ConfigurationError(f"layer {name!r} ({type(module).__name__}) is never run by the model's "
                                     f"forward pass, so it contributes nothing; choose a module that forward "
                                     f"uses" + (f" (of those named, these run: {ran})" if ran else ""))
        value = seen[name]
        if not isinstance(value, torch.Tensor):
            raise ShapeError(f"layer {name!r} ({type(module).__name__}) returns {value}, not one tensor; "
                             f"name a module whose output is one tensor (batch, channel, ...), e.g. a "
                             f"submodule of it")
        if value.ndim < 2 or not value.is_floating_point():
            raise ShapeError(f"layer {name!r} outputs {value.dtype} of shape {tuple(value.shape)}; a hidden "
                             f"layer must be floating point (batch, channel, ...)")
        shapes[name] = value.shape
    return shapes

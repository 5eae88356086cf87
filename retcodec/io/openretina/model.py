"""openretina core-readout models as retcodec models: one session, one window -> one rate per neuron.

:func:`load_openretina_model` reads a Lightning checkpoint safely
(:mod:`retcodec.io.openretina.checkpoint`), rebuilds the architecture from its
hyper-parameters with openretina's own classes (``UnifiedCoreReadout``, or the legacy
``ExampleCoreReadout``), loads the weights strictly and wraps the model for one session
(``data_key``) as an :class:`OpenRetinaModel`:

* input: retcodec windows ``(n, history, H, W)``, z-scored with the model's stimulus
  statistics (``data_info['stim_mean'|'stim_std']``); the wrapper adds openretina's
  channel axis, ``(n, 1, history, H, W)``;
* output ``(n, neurons)``: the model's response at the last time step of the window
  (openretina returns ``(n, time', neurons)``);
* ``layers``: ``conv0``, ``conv1``, ... = the output of each core layer's nonlinearity
  (``core.features.layer<i>.nonlin``: after convolution, batch norm and bias), a
  ``(n, channels, time', y, x)`` tensor. A hidden unit is a channel; CODEC sums its
  contributions over space and time (``retcodec.engine.network.space_sum``);
  silencing a channel zeroes it there, at every position and time step, so the next
  core layer and the readout receive nothing from it;
* ``layer_strides``: stimulus pixels per map pixel of each layer (input downsampling,
  max-pooling), used to place units on the stimulus when matching interneurons.

openretina is needed to rebuild the model (``pip install "retcodec[openretina]"``); only
classes from the ``openretina`` package that are torch modules may be named by a
configuration's ``_target_``, and nothing is instantiated before the whole
configuration was checked.
"""
from __future__ import annotations

import importlib
import inspect
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from retcodec._version import __version__
from retcodec.devices import resolve_device
from retcodec.errors import CheckpointError, ConfigurationError, InvalidModelError, MissingDataError
from retcodec.io.openretina.checkpoint import read_lightning_checkpoint
from retcodec.io.provenance import sha256

__all__ = ["OpenRetinaModel", "load_openretina_model", "is_lightning_checkpoint", "require_openretina",
           "OPENRETINA_SUFFIXES"]

#: file suffixes taken for Lightning checkpoints by ``retcodec run``
OPENRETINA_SUFFIXES = (".ckpt",)
#: configuration keys hydra would act on; only ``_target_`` is accepted
_HYDRA_TARGET = "_target_"


def require_openretina() -> Any:
    """Import openretina, or say how to install it."""
    try:
        return importlib.import_module("openretina")
    except ImportError as err:
        raise MissingDataError(
            f"openretina is needed to rebuild an openretina model ({err}); install it with "
            f"pip install \"retcodec[openretina]\" (then pip uninstall -y torchvision if the installed "
            f"torchvision does not match your torch)") from None


def is_lightning_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a Lightning checkpoint (by its suffix: ``.ckpt``)."""
    return Path(path).suffix.lower() in OPENRETINA_SUFFIXES


# =========================================================================== the wrapper
class OpenRetinaModel(nn.Module):
    """One session of an openretina core-readout model, as retcodec's engine uses models.

    Parameters
    ----------
    net : the openretina ``BaseCoreReadout`` (eval mode).
    session : the ``data_key`` of the readout to use.
    history : frames per window (the core's temporal receptive field by default).
    meta : ``dataset`` (the session), ``cells``, ``norm_stats``, ``img_shape``, ...
    """

    def __init__(self, net: nn.Module, session: str, history: int, meta: Mapping[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.session = str(session)
        features = net.core.features
        self.layer_paths = {f"conv{i}": f"net.core.features.{name}.nonlin"
                            for i, (name, _) in enumerate(features.named_children())}
        modules = dict(self.named_modules())
        self.layers = {name: modules[path] for name, path in self.layer_paths.items()}
        self.layer_strides = _layer_strides(net.core, list(self.layer_paths))
        height, width = (int(s) for s in meta["img_shape"][1:])
        self.img_shape = (int(history), height, width)
        self.n_cells = int(meta["n_cells"])
        self.meta = dict(meta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, history, H, W)`` windows -> ``(n, neurons)`` responses at the last time step."""
        out = self.net(x.unsqueeze(1), data_key=self.session)
        return out[:, -1, :]


def _layer_strides(core: nn.Module, names: list[str]) -> dict[str, int]:
    """Stimulus pixels per map pixel of each core layer: input downsampling, then 2 per max-pool."""
    kernel = getattr(core, "_downsample_input_kernel_size", None)
    stride = int(kernel[-1]) if kernel else 1
    strides = {}
    for name, layer in zip(names, core.features.children()):
        strides[name] = stride               # the nonlinearity comes before the layer's pooling
        pool = getattr(layer, "pool", None)
        if pool is not None:
            size = pool.kernel_size
            stride *= int(size[-1] if isinstance(size, tuple) else size)
    return strides


# =========================================================================== building
def _configs(config: Any, where: str) -> Iterator[tuple[Mapping[str, Any], str]]:
    """Every mapping in ``config`` (nested in mappings and lists), with where it sits."""
    if isinstance(config, Mapping):
        yield config, where
        for key, value in config.items():
            yield from _configs(value, f"{where}.{key}")
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            yield from _configs(value, f"{where}[{i}]")


def _check_names(config: Any, where: str) -> None:
    """No hydra key but ``_target_``, no interpolation, every target in the openretina package (by name)."""
    for node, at in _configs(config, where):
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("_") and key.endswith("_") and key != _HYDRA_TARGET:
                raise CheckpointError(f"{at} uses the hydra key {key!r}; retcodec rebuilds only plain "
                                      f"'_target_' configurations of openretina modules")
            if isinstance(value, str) and "${" in value:
                raise CheckpointError(f"{at}.{key} holds the interpolation {value!r:.80}; retcodec does not "
                                      f"resolve interpolations in a checkpoint")
        target = node.get(_HYDRA_TARGET)
        if target is not None and (not isinstance(target, str) or not target.startswith("openretina.")
                                   or target.count(".") < 2):
            raise CheckpointError(f"{at} names {target!r:.100} to build; retcodec only builds torch modules "
                                  f"of the openretina package (openretina.<module>.<Class>)")


def _check_targets(config: Any, where: str) -> None:
    """Every ``_target_`` in ``config`` must name a torch module class of the installed openretina."""
    for node, at in _configs(config, where):
        if node.get(_HYDRA_TARGET) is not None:
            _target_class(node[_HYDRA_TARGET], at)


def _target_class(target: str, where: str) -> type:
    module_name, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"{where} names {target!r}, which the installed openretina does not have "
                              f"({err}); install the openretina version the model was trained with") from None
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        raise CheckpointError(f"{where} names {target!r}, which is not a torch module class; retcodec "
                              f"only builds openretina modules")
    return obj


def _build_network(hparams: Mapping[str, Any], source: str) -> nn.Module:
    """The openretina model the hyper-parameters describe (weights not loaded yet).

    Every configuration is checked before openretina is imported or anything is built.
    """
    kwargs = {k: v for k, v in hparams.items() if k not in ("loss", "evaluation_loss", "optimizer",
                                                               "lr_scheduler")}
    unified = "core" in kwargs and "readout" in kwargs
    if unified:
        for part in ("core", "readout"):
            if not isinstance(kwargs[part], Mapping) or not isinstance(kwargs[part].get(_HYDRA_TARGET), str):
                raise CheckpointError(f"hyper_parameters[{part!r}] of {source} is not a '_target_' "
                                      f"configuration")
            _check_names(kwargs[part], f"hyper_parameters[{part!r}]")
    require_openretina()
    from omegaconf import OmegaConf
    from openretina.models.core_readout import ExampleCoreReadout, UnifiedCoreReadout

    if unified:
        for part in ("core", "readout"):
            _check_targets(kwargs[part], f"hyper_parameters[{part!r}]")
            kwargs[part] = OmegaConf.create(dict(kwargs[part]))
        cls: type = UnifiedCoreReadout
    elif "temporal_kernel_sizes" in kwargs:
        cls = ExampleCoreReadout
    else:
        raise CheckpointError(f"the hyper-parameters of {source} describe neither a UnifiedCoreReadout (core, "
                              f"readout) nor an ExampleCoreReadout (hidden_channels, temporal_kernel_sizes, ...); "
                              f"keys: {sorted(kwargs)}")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise CheckpointError(f"the hyper-parameters of {source} hold {unknown}, which {cls.__name__} of the "
                              f"installed openretina does not take; install the version the model was "
                              f"trained with")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(**kwargs)
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError, AttributeError) as err:
        raise CheckpointError(f"cannot rebuild the {cls.__name__} of {source} from its hyper-parameters "
                              f"({type(err).__name__}: {err})") from err


def _load_weights(net: nn.Module, state: Mapping[str, Any], source: str) -> None:
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"the state_dict of {source} holds values that are not tensors")
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(f"the weights of {source} do not fit the model its hyper-parameters describe: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}, other shapes {shapes[:5]}")
    net.load_state_dict(dict(state), strict=True)
    bad = [k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise InvalidModelError(f"the weights of {source} hold NaN or Inf in {bad[:5]}; the checkpoint is "
                                f"corrupt or the training diverged")


def _temporal_history(net: nn.Module, session: str, probe_shape: tuple[int, int, int, int]) -> int:
    """Frames one output time step reads: ``T - T' + 1`` for a probe of ``T`` frames."""
    channels, frames, height, width = probe_shape
    with torch.no_grad():
        out = net(torch.zeros(1, channels, frames, height, width), data_key=session)
    return max(1, frames - int(out.shape[1]) + 1)


def _session(data_info: Mapping[str, Any], net: nn.Module, session: str | None, source: str) -> str:
    readouts = list(getattr(net.readout, "readout_keys", lambda: list(net.readout.keys()))())
    if session is None:
        if len(readouts) != 1:
            raise ConfigurationError(f"{source} reads out {len(readouts)} sessions {readouts}; choose one "
                                     f"(--session / session=)")
        return str(readouts[0])
    if str(session) not in readouts:
        raise ConfigurationError(f"{source} has no session {session!r}; its sessions are {readouts}")
    return str(session)


def _norm_stats(data_info: Mapping[str, Any]) -> dict[str, float] | None:
    mean, std = data_info.get("stim_mean"), data_info.get("stim_std")
    if mean is None or std is None:
        return None
    mean, std = float(np.asarray(mean)), float(np.asarray(std))
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise InvalidModelError(f"the model's stimulus statistics are mean {mean}, std {std}; a finite mean "
                                f"and a positive std are needed")
    return {"mean": mean, "std": std}


def load_openretina_model(path: str | os.PathLike, session: str | None = None, device: str | torch.device = "cpu",
                          history: int | None = None) -> OpenRetinaModel:
    """Load an openretina core-readout checkpoint safely, for one session.

    Parameters
    ----------
    path : the Lightning ``.ckpt`` file.
    session : the readout's ``data_key`` (the recording session); may be omitted when
        the model reads out one session only.
    device : where to put the model.
    history : frames per window; default the core's temporal receptive field (the
        frames that reach one output time step).

    Returns
    -------
    :class:`OpenRetinaModel` in eval mode, parameters frozen, with ``meta`` =
    ``dataset`` (the session), ``stim_type``, ``cells`` (0 … n-1), ``n_cells``,
    ``img_shape``, ``norm_stats`` (``None`` when the checkpoint holds none: the
    recording's train statistics are then used), ``model_type``, ``hyps`` and
    ``provenance``.

    Raises
    ------
    UnsafeCheckpointError
        The file needs arbitrary unpickling (nothing from it ran).
    CheckpointError
        Not a core-readout checkpoint, a configuration naming anything but openretina
        modules, weights that do not fit.
    ConfigurationError
        An unknown session, or none given for a multi-session model; a colour model.
    MissingDataError
        openretina is not installed (only needed once the file was read safely).
    """
    target = resolve_device(device)
    file = Path(path).expanduser()
    source = repr(str(file))
    data = read_lightning_checkpoint(file)
    hparams = dict(data["hyper_parameters"])
    net = _build_network(hparams, source)
    _load_weights(net, data["state_dict"], source)
    net.eval().requires_grad_(False)
    data_info = dict(hparams.get("data_info") or {})
    chosen = _session(data_info, net, session, source)
    in_shape = tuple(int(s) for s in hparams.get("in_shape") or (1, 40, *data_info.get("input_shape", (1, 50, 50))[1:]))
    if in_shape[0] != 1:
        raise ConfigurationError(f"{source} reads {in_shape[0]} colour channels; retcodec's windows are "
                                 f"greyscale (one channel)")
    if history is None:
        history = _temporal_history(net, chosen, in_shape)
    n_cells = int(net(torch.zeros(1, *in_shape[:1], max(history, in_shape[1]), *in_shape[2:]),
                      data_key=chosen).shape[-1])
    meta = {"dataset": chosen, "session": chosen, "stim_type": data_info.get("stim_type"),
            "response": data_info.get("response_type"),
            "cells": list(range(n_cells)), "n_cells": n_cells, "img_shape": (int(history), *in_shape[2:]),
            "norm_stats": _norm_stats(data_info), "centers": None,
            "model_type": f"openretina.{type(net).__name__}", "hyps": _hyps_summary(hparams),
            "provenance": {"source_file": str(file), "sha256": sha256(file), "retcodec_version": __version__,
                           "loader": "retcodec.io.openretina (weights_only, allow-listed stand-ins)",
                           "epoch": data.get("epoch"), "global_step": data.get("global_step"),
                           "lightning_version": data.get("pytorch-lightning_version"),
                           "sessions": list(map(str, net.readout.keys()))}}
    model = OpenRetinaModel(net, chosen, int(history), meta)
    return model.eval().requires_grad_(False).to(target)


def _hyps_summary(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture part of the hyper-parameters (no tensors), for provenance."""
    keep = ("core", "readout", "in_shape", "hidden_channels", "n_neurons_dict", "temporal_kernel_sizes",
            "spatial_kernel_sizes", "learning_rate")
    return {k: hparams[k] for k in keep if k in hparams}

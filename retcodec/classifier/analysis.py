"""CODEC on an image classifier (``docs/method.md`` §12): contributions, modes, classes, controls.

Per image ``i`` and layer channel ``c``: the E/I-split contributions
``C (image, channel, sign)`` to a scalar target (top-1 logit by default) from
:func:`retcodec.engine.contributions` (integrated gradients, 10 steps), summed over
space (conv layers) or tokens (token layers). Then

* :func:`fit_modes`: sparse contribution modes per layer (θ = 0.9,
  K = 3 × channels) on ``C+``, or — the control — on the activations;
* :func:`mode_class_correlation`: Pearson correlation of every mode's loadings
  with class (and super-class) indicator vectors → ``(mode, class)``;
* :func:`control_experiments`: per class, its most correlated mode ranks the
  channels; ablating the top ``p`` share (activations set to 0) or preserving
  only them gives accuracy ratios (perturbed / original) on the class's images
  (``on``) and the other images (``off``); areas under the ratio-vs-``p``
  curves and their specificity (ablation: off − on; preservation: on − off);
* :func:`input_maps`: InputGrad maps of a mode,
  ``Σ_{c∈mode, i,j} x ⊙ ∂S/∂h_{c,ij} ∂h_{c,ij}/∂x`` (positive part);
* :func:`classifier_statistics`: Hoyer sparsity, E/I correlation and the
  dimensionality of class-averaged contributions.

Every per-image result uses the dim ``image`` with coordinates ``label`` and
``prediction``; the model outputs use the dim ``class``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from retcodec.engine.contributions import contributions
from retcodec.engine.quadrature import DEFAULT_MAX_STEPS, DEFAULT_TOL
from retcodec.engine.perturb import (KINDS, SilencePoint, channel_mask, check_fractions, curve_auc,
                                     dose_sets, silenced, specificity)
from retcodec.errors import ConfigurationError, MissingDataError, ShapeError
from retcodec.modes import ContributionModes, fit_layer
from retcodec.analysis.statistics import dimensionality, layer_statistics, pearson
from retcodec.engine.targets import make_target
from .adapter import ClassifierAdapter
from .images import ImageSet, as_image_set

__all__ = ["image_contributions", "fit_modes", "mode_class_correlation", "load_superclasses",
           "channel_order", "predict", "control_curves", "control_experiments", "input_maps",
           "classifier_statistics", "DEFAULT_FRACTIONS", "KINDS"]

DEFAULT_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
GROUPS = ("on", "off")


# =========================================================================== helpers
def _checked(model: ClassifierAdapter, images: ImageSet) -> ClassifierAdapter:
    """Probe ``model`` with the first images; check labels against its classes."""
    if not isinstance(model, ClassifierAdapter):
        raise ConfigurationError("model must be a ClassifierAdapter (see retcodec.classifier.load_classifier)")
    probe = images[0:min(2, len(images))]
    try:
        model.check(probe)
    except RuntimeError as err:
        raise ShapeError(f"the classifier cannot run on images of shape {probe.shape[1:]} "
                         f"(C, H, W): {str(err).splitlines()[0]}") from None
    if images.labels.max(initial=-1) >= model.n_classes_:
        raise ShapeError(f"labels go up to {images.labels.max()} but the model has "
                         f"{model.n_classes_} outputs")
    return model


def _batches(images: ImageSet, batch_size: int) -> list[torch.Tensor]:
    return [torch.as_tensor(images[s:s + batch_size]) for s in range(0, len(images), batch_size)]


def _with_time(da: xr.DataArray) -> xr.DataArray:
    """``image`` renamed ``time`` (the dim the shared modes/statistics code expects)."""
    return da.rename({"image": "time"}) if "image" in da.dims else da


def _with_image(obj: Any) -> Any:
    return obj.rename({"time": "image"}) if "time" in obj.dims else obj


def _class_names(model: ClassifierAdapter, images: ImageSet) -> list[str]:
    if model.class_names is not None:
        return list(model.class_names)
    names = list(images.class_names)
    return names + [str(k) for k in range(len(names), model.n_classes_)]


# =========================================================================== contributions
def image_contributions(model: ClassifierAdapter, images: Any, target: Any = "top_logit",
                        steps: int | str = 10, method: str = "ig", baseline: float | np.ndarray = 0.0,
                        batch_size: int = 32, device: str | torch.device = "cpu",
                        progress: bool = False, out: str | Path | None = None,
                        chunk_size: int | None = None, resume: bool = True,
                        on_chunk: Any = None, tol: float = DEFAULT_TOL,
                        max_steps: int = DEFAULT_MAX_STEPS) -> xr.DataTree:
    """Contributions of every channel of ``model.layers`` for every image.

    Parameters
    ----------
    model : :class:`ClassifierAdapter`.
    images : anything :func:`as_image_set` accepts (normalised images ``(n, C, H, W)``; an
        image folder is read with the model's normalisation).
    target : ``"top_logit"`` (default), ``"top_margin"``, ``"softmax_entropy"``, or a
        Target such as ``TopKLogits(k)`` / ``ClassLogit(c)``.
    steps, method, baseline : as in :func:`retcodec.engine.contributions` (IG with 10 steps, zero image).
        ``steps="auto"`` refines the path integral per image until it is complete to ``tol``
        (or ``max_steps`` intervals); deep networks need it (``docs/classifier.md``). Each
        image then keeps ``steps + 1`` copies of the hidden layers until it is done: use a
        small ``batch_size`` (4-8) on ImageNet-sized images.
    out, chunk_size, resume, on_chunk : stream to a netCDF file as the retina path does: chunks
        go to ``<out>.engine.nc.partial/`` while computing, an interrupted run resumes from
        them, and ``out`` (labelled with ``image``/``class``) appears atomically when complete.
        A finished ``out`` made with the same method, steps, target and image count is
        reopened instead of recomputed (``resume=False`` recomputes).

    Returns
    -------
    DataTree: root ``target (image)``, ``target_baseline (image)``, ``output (image, class)``,
    ``completeness_error (layer, statistic)``, coords ``label (image)``, ``prediction (image)``,
    ``class_name (class)`` (with ``steps="auto"`` also ``quadrature_steps (image)`` and
    ``quadrature_error (image)``); one child per layer with ``contribution (image, channel, sign)``,
    ``activation (image, channel)``, ``completeness_residual (image)``.
    """
    images = as_image_set(images, normalization=getattr(model, "normalization", None))
    model = _checked(model, images)
    final = None
    if out is not None:
        from retcodec.io.storage import check_output_file
        final = check_output_file(out, "out", own_only=True)
    if final is not None and final.exists() and resume:
        return _reopen_finished(final, method, steps, len(images), target)
    engine_out = final.with_name(final.name + ".engine.nc") if final is not None else None
    tree = contributions(model, images, layers=list(model.layers), method=method, steps=steps,
                         target=target, baseline=baseline, batch_size=batch_size, device=device,
                         progress=progress, fast=False, out=engine_out, chunk_size=chunk_size,
                         resume=resume, on_chunk=on_chunk, tol=tol, max_steps=max_steps)
    root = tree.to_dataset(inherit=False).rename({"time": "image", "cell": "class"})
    root.attrs["normalization"] = model.normalization.describe()
    root = root.assign_coords(
        image=("image", np.arange(len(images)), {"long_name": "image index"}),
        label=("image", images.labels, {"long_name": "true class index (-1: unknown)"}),
        prediction=("image", root["output"].values.argmax(axis=1), {"long_name": "top-1 class"}),
        class_name=("class", _class_names(model, images)))
    children = {name: _with_image(tree[name].to_dataset(inherit=False)) for name in model.layers}
    for name, ds in children.items():
        ds.attrs["layout"] = model.layer_layouts[name]
    result = xr.DataTree.from_dict({"/": root, **children})
    if final is not None:
        from retcodec.io.storage import write_netcdf_atomic
        result = result.load()
        write_netcdf_atomic(result, final)
        engine_out.unlink(missing_ok=True)
    return result


def _reopen_finished(path: Path, method: str, steps: int | str, n_images: int, target: Any) -> xr.DataTree:
    """A finished contributions file, checked against the requested settings."""
    tree = xr.open_datatree(path, engine="h5netcdf")
    have = (tree.attrs.get("method"), str(tree.attrs.get("steps", -1)), tree.sizes.get("image"))
    name = target if isinstance(target, str) else getattr(target, "name", None)
    if name is not None and tree.attrs.get("target") not in (None, name):
        raise ConfigurationError(f"{path} holds contributions to the target {tree.attrs.get('target')!r}, "
                                 f"not {name!r}; pass resume=False to recompute or choose another out")
    if have != (method, str(steps).lower(), n_images):
        raise ConfigurationError(
            f"{path} holds contributions made with method={have[0]}, steps={have[1]} for {have[2]} "
            f"images, not method={method}, steps={steps} for {n_images}; pass resume=False to "
            f"recompute or choose another out")
    return tree


def _layer(tree: xr.DataTree, layer: str) -> xr.Dataset:
    if layer not in tree.children:
        raise ConfigurationError(f"layer {layer!r} is not in the contributions; have {list(tree.children)}")
    return tree[layer].to_dataset()


# =========================================================================== modes
def fit_modes(tree: xr.DataTree, layer: str, source: str = "contribution", multiplier: int = 3,
              threshold: float = 0.9, random_state: int = 0, **estimator_kwargs: Any) -> xr.Dataset:
    """Sparse modes of one layer: ``modes (mode, channel, sign)``, ``loadings (image, mode)``.

    ``source="contribution"`` fits ``C+`` (the paper's setting); ``"activation"``
    fits the spatially summed activations (the control; their negative part,
    zero after a ReLU, is left out). ``K = multiplier × channels``.
    """
    ds = _layer(tree, layer)
    if source == "contribution":
        data = _with_time(ds["contribution"])
    elif source == "activation":
        a = ds["activation"]
        data = _with_time(xr.concat([a.clip(max=0), a.clip(min=0)], dim="sign").assign_coords(
            sign=["neg", "pos"]).transpose("image", "channel", "sign"))
    else:
        raise ConfigurationError(f"source must be 'contribution' or 'activation', got {source!r}")
    estimator = ContributionModes(multiplier=multiplier, threshold=threshold,
                                  random_state=random_state, **estimator_kwargs)
    modes = _with_image(fit_layer(estimator, data, sign="pos", layer=layer))
    modes = modes.assign_coords(image=ds["image"].values, label=("image", tree["label"].values))
    modes.attrs["source"] = source
    return modes


# =========================================================================== mode-class correlation
def load_superclasses(path: str | Path) -> dict[str, str]:
    """A JSON file ``{"class_name": "superclass", ...}`` as a dict."""
    from retcodec.io.paths import user_path
    path = user_path(path, "super-class mapping file")
    if not path.is_file():
        raise MissingDataError(f"no super-class mapping file at {path}")
    try:
        mapping = json.loads(path.read_text())
    except ValueError as err:
        raise ConfigurationError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, (str, int)) for v in mapping.values()):
        raise ConfigurationError(f"{path} must map class names to super-class names")
    return {str(k): str(v) for k, v in mapping.items()}


def _indicators(labels: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """``(images, groups)``: 1 where an image's label is in the group."""
    return np.stack([np.isin(labels, g) for g in groups], axis=1).astype(np.float64)


def mode_class_correlation(loadings: xr.DataArray, labels: Any, class_names: Sequence[str],
                           superclasses: Mapping[str, str] | None = None) -> xr.Dataset:
    """Pearson correlation of each mode's loadings with class indicator vectors.

    Parameters
    ----------
    loadings : ``(image, mode)``.
    labels : ``(image,)`` class indices (``-1`` images are left out).
    class_names : names of the classes (index order).
    superclasses : optional mapping class name -> super-class name (every class
        named must exist; unmapped classes are left out of the super-classes).

    Returns
    -------
    Dataset with ``correlation (mode, class)`` and, given ``superclasses``,
    ``superclass_correlation (mode, superclass)`` (NaN for constant loadings).
    """
    labels = np.asarray(labels)
    if loadings.dims != ("image", "mode"):
        loadings = loadings.transpose("image", "mode")
    if labels.shape != (loadings.sizes["image"],):
        raise ShapeError(f"labels must have shape ({loadings.sizes['image']},), got {labels.shape}")
    keep = labels >= 0
    Z, y = loadings.values[keep], labels[keep]
    names = [str(c) for c in class_names]
    corr = _group_correlation(Z, _indicators(y, [[k] for k in range(len(names))]))
    ds = xr.Dataset({"correlation": (("mode", "class"), corr, {
        "long_name": "Pearson correlation of mode loadings with class indicators"})},
        coords={"mode": loadings["mode"].values, "class": np.arange(len(names)), "class_name": ("class", names)})
    if superclasses:
        unknown = sorted(set(superclasses) - set(names))
        if unknown:
            raise ConfigurationError(f"super-class mapping names unknown classes {unknown[:5]}")
        supers = sorted(set(superclasses.values()))
        groups = [[names.index(c) for c, s in superclasses.items() if s == sup] for sup in supers]
        ds["superclass_correlation"] = (("mode", "superclass"), _group_correlation(Z, _indicators(y, groups)),
                                        {"long_name": "Pearson correlation with super-class indicators"})
        ds = ds.assign_coords(superclass=supers)
    return ds


def _group_correlation(Z: np.ndarray, indicators: np.ndarray) -> np.ndarray:
    """``(modes, groups)`` Pearson correlation of columns of ``Z`` with indicator columns."""
    return pearson(Z[:, :, None], indicators[:, None, :], axis=0)


# =========================================================================== control experiments
def channel_order(modes: xr.Dataset, mode: int) -> np.ndarray:
    """Channel indices ranked by the mode's positive weight, largest first (ties by index)."""
    weights = modes["modes"].sel(mode=mode, sign="pos").values
    return np.argsort(-weights, kind="stable")


def _point(model: ClassifierAdapter, layer: str) -> SilencePoint:
    """Where ``layer``'s channels are silenced: its module's output (channels or tokens layout)."""
    return SilencePoint(layer, model.layers[layer], None, model.n_channels(layer), model.layer_layouts[layer])


@torch.no_grad()
def predict(model: ClassifierAdapter, batches: Sequence[torch.Tensor], layer: str | None = None,
            channels: Sequence[int] | np.ndarray = (), keep: bool = False) -> np.ndarray:
    """Top-1 predictions ``(n,)``; with ``layer``, ``channels`` of it ablated (or kept alone)."""
    masks = {} if layer is None else {layer: channel_mask(model.n_channels(layer), channels, keep)}
    points = {} if layer is None else {layer: _point(model, layer)}
    model.eval()
    with silenced(points, masks):
        return np.concatenate([model(x).argmax(dim=1).cpu().numpy() for x in batches])


def _accuracy(pred: np.ndarray, labels: np.ndarray, where: np.ndarray) -> float:
    return float(np.mean(pred[where] == labels[where])) if where.any() else np.nan


def control_curves(model: ClassifierAdapter, batches: Sequence[torch.Tensor], labels: np.ndarray,
                   layer: str, order: np.ndarray, target_class: int,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS, kind: str = "ablate",
                   original: np.ndarray | None = None) -> np.ndarray:
    """Accuracy ratios perturbed / original, ``(group=[on, off], fraction)``.

    ``kind="ablate"`` zeroes the top ``round(p · C)`` channels of ``order``;
    ``"preserve"`` zeroes all others. ``on``: images of ``target_class``;
    ``off``: the other labelled images.
    """
    if kind not in KINDS:
        raise ConfigurationError(f"kind must be one of {KINDS}, got {kind!r}")
    original = predict(model, batches) if original is None else original
    on, off = labels == target_class, (labels >= 0) & (labels != target_class)
    base = [_accuracy(original, labels, g) for g in (on, off)]
    out = np.full((2, len(fractions)), np.nan)
    for j, top in enumerate(dose_sets(order, fractions)):
        pred = predict(model, batches, layer, top, keep=kind == "preserve")
        for g, where in enumerate((on, off)):
            out[g, j] = _accuracy(pred, labels, where) / base[g] if base[g] > 0 else np.nan
    return out


def control_experiments(model: ClassifierAdapter, images: Any, modes: xr.Dataset,
                        correlation: xr.Dataset, layer: str | None = None,
                        classes: Sequence[int] | None = None,
                        fractions: Sequence[float] = DEFAULT_FRACTIONS,
                        batch_size: int = 256) -> xr.Dataset:
    """Ablation and preservation of each class's most correlated mode.

    Parameters
    ----------
    model, images : the classifier and labelled images.
    modes : :func:`fit_modes` output of ``layer`` (its ``layer`` attr by default).
    correlation : :func:`mode_class_correlation` of those modes.
    classes : class indices (default: all with images).
    fractions : shares ``p`` of the layer's channels, in [0, 1], increasing.

    Returns
    -------
    Dataset: ``ratio (class, kind, group, fraction)``, ``auc (class, kind, group)``,
    ``specificity (class, kind)`` (ablate: off − on; preserve: on − off),
    ``mode (class)`` and ``mode_correlation (class)``.
    """
    images = as_image_set(images)
    model = _checked(model, images)
    layer = layer or modes.attrs.get("layer")
    if layer not in model.layers:
        raise ConfigurationError(f"layer {layer!r} is not one of the model's layers {list(model.layers)}")
    f = check_fractions(fractions)
    if modes.sizes.get("mode", 0) == 0:
        raise ConfigurationError("the modes dataset holds no modes")
    labels = images.labels
    classes = sorted(set(labels[labels >= 0].tolist())) if classes is None else [int(c) for c in classes]
    batches = _batches(images, batch_size)
    original = predict(model, batches)
    corr = correlation["correlation"]
    ratio = np.full((len(classes), len(KINDS), 2, len(f)), np.nan)
    best = np.zeros(len(classes), dtype=np.int64)
    best_r = np.full(len(classes), np.nan)
    for i, c in enumerate(classes):
        col = np.nan_to_num(corr.sel({"class": c}).values, nan=-np.inf)
        best[i] = int(corr["mode"].values[int(np.argmax(col))])
        best_r[i] = float(corr.sel({"class": c, "mode": best[i]}))
        order = channel_order(modes, best[i])
        for k, kind in enumerate(KINDS):
            ratio[i, k] = control_curves(model, batches, labels, layer, order, c, f, kind, original)
    auc = curve_auc(f, ratio)
    spec = np.stack([specificity(auc[:, k, 0], auc[:, k, 1], kind) for k, kind in enumerate(KINDS)], axis=1)
    return xr.Dataset(
        {"ratio": (("class", "kind", "group", "fraction"), ratio,
                   {"long_name": "accuracy perturbed / original"}),
         "auc": (("class", "kind", "group"), auc, {"long_name": "area under ratio vs fraction"}),
         "specificity": (("class", "kind"), spec,
                         {"long_name": "ablate: AUC off - AUC on; preserve: AUC on - AUC off"}),
         "mode": ("class", best, {"long_name": "mode most correlated with the class"}),
         "mode_correlation": ("class", best_r)},
        coords={"class": classes, "kind": list(KINDS), "group": list(GROUPS), "fraction": f},
        attrs={"layer": layer, "source": modes.attrs.get("source", "contribution")})


# =========================================================================== input maps
def input_maps(model: ClassifierAdapter, images: Any, layer: str, channels: Sequence[int],
               target: Any = "top_logit", median_size: int | None = None,
               batch_size: int = 64) -> xr.DataArray:
    """InputGrad maps of a set of channels (a mode's top channels), ``(image, y, x)``.

    ``Σ_{c∈channels, i,j} x ⊙ ∂S/∂h_{c,ij} · ∂h_{c,ij}/∂x``, summed over input
    channels; the positive part, optionally median filtered (``median_size`` pixels).
    """
    images = as_image_set(images)
    model = _checked(model, images)
    if layer not in model.layers:
        raise ConfigurationError(f"layer {layer!r} is not one of the model's layers {list(model.layers)}")
    tgt = make_target(target)
    idx = torch.as_tensor(np.asarray(channels, dtype=np.int64))
    layout = model.layer_layouts[layer]
    maps = [_input_map_batch(model, x, layer, idx, layout, tgt) for x in _batches(images, batch_size)]
    out = np.concatenate(maps)
    if median_size:
        from scipy.ndimage import median_filter
        out = median_filter(out, size=(1, int(median_size), int(median_size)))
    return xr.DataArray(np.maximum(out, 0.0), dims=("image", "y", "x"), name="input_map",
                        coords={"label": ("image", images.labels)},
                        attrs={"layer": layer, "channels": np.asarray(channels, dtype=np.int64),
                               "long_name": "positive part of the InputGrad map of the channels"})


def _input_map_batch(model: ClassifierAdapter, x: torch.Tensor, layer: str, idx: torch.Tensor,
                     layout: str, target: Any) -> np.ndarray:
    captured: dict[str, torch.Tensor] = {}
    handle = model.layers[layer].register_forward_hook(lambda m, a, o: captured.__setitem__("h", o))
    try:
        model.eval()
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            h_out = model(x)
            h = captured["h"]
            (g,) = torch.autograd.grad(target(h_out).sum(), h, retain_graph=True)
            sel = (g.detach() * h)[..., idx] if layout == "tokens" else (g.detach() * h)[:, idx]
            (dx,) = torch.autograd.grad(sel.sum(), x)
    finally:
        handle.remove()
    return (x.detach() * dx).sum(dim=1).numpy()


# =========================================================================== statistics
def classifier_statistics(tree: xr.DataTree, variance: float = 0.95) -> xr.Dataset:
    """:func:`retcodec.analysis.statistics.layer_statistics` per layer plus class-averaged dimensionality.

    Adds ``class_dimensionality (layer)``: principal components reaching
    ``variance`` of the class-averaged contributions ``(class, channel × sign)``,
    and ``class_dimensionality_activation (layer)`` of class-averaged activations.
    """
    labels = tree["label"].values
    nodes = {name: tree[name].to_dataset(inherit=False) for name in tree.children}
    as_time = xr.DataTree.from_dict({n: ds.rename({"image": "time"}) for n, ds in nodes.items()})
    stats = _with_image(layer_statistics(as_time, variance))
    known = sorted(set(labels[labels >= 0].tolist()))
    cdim, adim = [], []
    for name, ds in nodes.items():
        c = ds["contribution"].values.reshape(ds.sizes["image"], -1)
        a = ds["activation"].values
        cdim.append(dimensionality(np.stack([c[labels == k].mean(0) for k in known]), variance))
        adim.append(dimensionality(np.stack([a[labels == k].mean(0) for k in known]), variance))
    stats["class_dimensionality"] = ("layer", cdim, {
        "long_name": f"PCs reaching {variance:g} of the variance of class-averaged contributions"})
    stats["class_dimensionality_activation"] = ("layer", adim, {
        "long_name": f"PCs reaching {variance:g} of the variance of class-averaged activations"})
    return stats

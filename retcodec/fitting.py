"""Fit the published ``VaryModel`` CNN layout to a recording (``retcodec fit``).

The published training recipe (``docs/method.md`` §10.3): Poisson loss on the
rates, L1 on the outputs, L2 on the weights (Adam's ``weight_decay``), windows of
40 frames z-scored with the train split's global mean/std. Here the validation
set is a contiguous held-out slice at the end of the train split (separated by
one window length, so no frame is shared), early stopping is on the mean
validation correlation and the best weights are kept.

The ganglion layer reads each cell at its receptive-field centre, so the
centres are estimated from the recording itself: the peak of the spike-triggered
average (white noise when the experiment has it, else the fitted stimulus).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr
from scipy import ndimage

from retcodec.io.architectures import AbsBatchNorm, VaryModel, build_model
from retcodec.errors import ConfigurationError, NonFiniteError, ShapeError
from retcodec.analysis.metrics import pearson
from retcodec.defaults import ENSEMBLE_MEMBERS
from retcodec.devices import resolve_device

__all__ = ["FitConfig", "RECIPES", "recipe", "spike_triggered_average", "sta_centers", "find_centers", "WindowBatches", "fit", "fit_ensemble", "member_paths", "split_windows", "recalibrate_batchnorm", "calibrate_output"]


@dataclass
class FitConfig:
    """Hyper-parameters of :func:`fit` (defaults measured on the in-silico retina)."""

    chans: tuple[int, int] = (8, 8)
    ksizes: tuple[int, int, int] = (15, 11, 11)
    history: int = 40
    epochs: int = 4
    batch_size: int = 256
    lr: float = 2e-3
    l2: float = 1e-4
    l1: float = 1e-4
    noise: float = 0.05
    drop_p: float = 0.05
    val_fraction: float = 0.1
    patience: int = 2
    lr_decay: float = 0.5
    lr_patience: int = 1
    seed: int = 0
    threads: int | None = None
    recalibration_windows: int = 4096

    def hyps(self, n_cells: int, centers: np.ndarray, extra: dict[str, Any]) -> dict[str, Any]:
        """The published hyps dict for a VaryModel with these settings."""
        h = dict(model_type="VaryModel", chans=list(self.chans), ksizes=list(self.ksizes),
                 img_shape=[self.history, 50, 50], n_units=int(n_cells), n_layers=3,
                 stackconvs=True, stack_ksizes=3, stack_chans=None, drop_p=self.drop_p,
                 convgc=True, bnorm_d=2, bias=True, gc_bias=False, noise=self.noise,
                 bn_moment=0.01, softplus=True, inference_exp=False, activ_fxn="ReLU",
                 lossfxn="PoissonNLLLoss", log_poisson=False, lr=self.lr, l2=self.l2, l1=self.l1,
                 batch_size=self.batch_size, seed=self.seed, centers=np.asarray(centers, np.int64))
        h.update(extra)
        return h


#: the fitting recipes, in one place (``docs/benchmark.md`` states their costs and fits):
#: ``bundled`` -- the bundled default's two models (``retcodec regenerate``; full train split);
#: ``family`` -- each retina of the benchmark family (``retcodec benchmark``), budgeted;
#: ``quick`` -- the quick benchmark family (tests, CI): one short epoch, a rough fit.
RECIPES: dict[str, FitConfig] = {
    "bundled": FitConfig(),
    "family": FitConfig(epochs=3, patience=1),
    "quick": FitConfig(epochs=1, recalibration_windows=1024),
}


def recipe(name: str, **overrides: Any) -> FitConfig:
    """The :data:`RECIPES` entry ``name`` with some fields replaced."""
    if name not in RECIPES:
        raise ConfigurationError(f"unknown fitting recipe {name!r}; use one of {', '.join(RECIPES)}")
    return dataclasses.replace(RECIPES[name], **overrides)


# --------------------------------------------------------------------------- centres
def spike_triggered_average(stimulus: np.ndarray, rate: np.ndarray, history: int = 40,
                            chunk: int = 5000) -> np.ndarray:
    """Rate-weighted average of the preceding ``history`` frames: ``(n, lag, H, W)``.

    ``stimulus`` (T, H, W) should be zero-mean; lag index j is ``history - j``
    frames before the response bin (the model's window order: last = most recent).
    """
    T = stimulus.shape[0]
    n = rate.shape[0]
    sta = np.zeros((n, history) + stimulus.shape[1:], np.float64)
    w = rate[:, history:] - rate[:, history:].mean(axis=1, keepdims=True)
    for s in range(0, T - history, chunk):
        e = min(s + chunk, T - history)
        frames = stimulus[s:e + history].reshape(e - s + history, -1)
        for j in range(history):
            sta[:, j] += (w[:, s:e] @ frames[j:j + e - s]).reshape((n,) + stimulus.shape[1:])
    return (sta / max(T - history, 1)).astype(np.float32)


def sta_centers(sta: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """Receptive-field centre (row, col) of each cell: the peak of the STA's spatial energy.

    The energy is the variance over lags of each pixel, smoothed with a Gaussian
    of ``smooth`` px; the centre is its arg-max, refined by the energy-weighted
    mean of a 5x5 neighbourhood, then rounded to whole pixels.
    """
    out = []
    for cell in sta:
        energy = ndimage.gaussian_filter(cell.var(axis=0), smooth)
        r, c = np.unravel_index(np.argmax(energy), energy.shape)
        r0, r1, c0, c1 = max(r - 2, 0), r + 3, max(c - 2, 0), c + 3
        patch = energy[r0:r1, c0:c1]
        yy, xx = np.mgrid[r0:r0 + patch.shape[0], c0:c0 + patch.shape[1]]
        out.append([(patch * yy).sum() / patch.sum(), (patch * xx).sum() / patch.sum()])
    return np.rint(np.array(out)).astype(np.int64)


def find_centers(recording: xr.Dataset, history: int = 40) -> tuple[np.ndarray, str]:
    """Estimate cell centres from a recording's train split (white noise when available).

    Looks for ``whitenoise.h5`` beside the recording's file; falls back to the
    recording itself. Returns ``(centers (n, 2) int, description of the source)``.
    """
    from retcodec.io.recordings import load_recording

    source = recording
    src = recording.attrs.get("source_file")
    if src and recording.attrs.get("stim_type") != "whitenoise":
        wn = Path(src).with_name("whitenoise.h5")
        if wn.exists():
            source = load_recording(wn, split="train", cells=list(recording["cell"].values))
    stim = np.asarray(source["stimulus"].values, np.float32)
    stim = (stim - stim.mean()) / (stim.std() + 1e-7)
    rate = np.asarray(source["rate"].transpose("cell", "time").values, np.float32)
    sta = spike_triggered_average(stim, rate, history)
    how = f"STA peak on {source.attrs.get('stim_type', 'the fitted stimulus')} train split"
    return sta_centers(sta), how


# --------------------------------------------------------------------------- data
class WindowBatches:
    """Random mini-batches of ``(B, history, 50, 50)`` windows from an in-memory stimulus."""

    def __init__(self, stim: torch.Tensor, rate: torch.Tensor, history: int) -> None:
        self.stim = stim                       # (T, H, W) float32, z-scored
        self.rate = rate                       # (T, n)
        self.history = history
        self.view = stim.unfold(0, history, 1)  # (T-h+1, H, W, h), a view

    def windows(self, idx: torch.Tensor) -> torch.Tensor:
        return self.view[idx].permute(0, 3, 1, 2).contiguous()

    def targets(self, idx: torch.Tensor) -> torch.Tensor:
        return self.rate[idx + self.history]


def _check_not_diverged(model: torch.nn.Module, loss: float, epoch: int) -> None:
    """Refuse to go on from a training epoch whose loss or weights are NaN or Inf."""
    if math.isfinite(loss) and all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return
    raise NonFiniteError(f"training diverged in epoch {epoch + 1} (loss {loss:.4g}, or weights NaN/Inf): the "
                         f"recording's rates may be implausible for a firing-rate model or the learning rate too "
                         f"high; check the rates (Hz) or lower lr")


def _checked_config(cfg: FitConfig) -> FitConfig:
    """``cfg`` if every field has a usable type and range, else :class:`ConfigurationError`."""
    def whole(name: str, low: int) -> None:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ConfigurationError(f"fit option {name} must be an integer >= {low}, got {v!r}")

    def real(name: str, low: float, high: float, *, low_open: bool = False) -> None:
        v = getattr(cfg, name)
        ok = (not isinstance(v, bool) and isinstance(v, (int, float, np.number)) and math.isfinite(v)
              and (v > low if low_open else v >= low) and v <= high)
        if not ok:
            raise ConfigurationError(f"fit option {name} must be a number in {'(' if low_open else '['}{low}, "
                                     f"{high}], got {v!r}")

    for name, low in (("history", 1), ("epochs", 1), ("batch_size", 1), ("patience", 1), ("lr_patience", 0),
                      ("seed", 0), ("recalibration_windows", 1)):
        whole(name, low)
    for name, low, high, open_ in (("lr", 0.0, 10.0, True), ("l2", 0.0, 1e3, False), ("l1", 0.0, 1e3, False),
                                   ("noise", 0.0, 1e3, False), ("drop_p", 0.0, 1.0, False),
                                   ("val_fraction", 0.0, 0.9, True), ("lr_decay", 0.0, 1.0, True)):
        real(name, low, high, low_open=open_)
    if cfg.threads is not None:
        whole("threads", 1)
    return cfg


def _zscore_train(recording: xr.Dataset) -> tuple[np.ndarray, dict[str, float]]:
    stim = np.asarray(recording["stimulus"].values, np.float32)
    if not np.isfinite(stim).all():
        raise NonFiniteError("the train stimulus holds NaN or Inf values; fix the recording first")
    mean = float(stim.mean(dtype=np.float64))
    std = float(stim.std(dtype=np.float64)) + 1e-7
    return ((stim - mean) / std).astype(np.float32), {"mean": mean, "std": std}


# --------------------------------------------------------------------------- fit
def split_windows(n_windows: int, n_val: int, history: int, block: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation window indices: validation block ``block`` of ``n_windows //
    n_val`` contiguous blocks of ``n_val`` windows (-1: the last), and every window at
    least ``history`` windows away from it for training (no frame is shared)."""
    n_blocks = max(n_windows // n_val, 1)
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not -n_blocks <= block < n_blocks:
        raise ConfigurationError(f"validation_block must be an integer in [-{n_blocks}, {n_blocks - 1}] "
                                 f"({n_blocks} blocks of {n_val} windows), got {block!r}")
    block %= n_blocks                       # the last block ends at the last window (n_windows % n_val spare)
    start = n_windows - n_val if block == n_blocks - 1 else block * n_val
    val_idx = np.arange(start, start + n_val)
    all_idx = np.arange(n_windows)
    keep = (all_idx < start - history) | (all_idx >= start + n_val + history)
    return all_idx[keep], val_idx


def fit(recording: xr.Dataset, *, config: FitConfig | None = None, centers: np.ndarray | None = None,
        test: xr.Dataset | None = None, device: str | torch.device = "cpu", progress: bool = False,
        out: str | Path | None = None, validation_block: int = -1,
        **overrides: Any) -> tuple[VaryModel, xr.Dataset]:
    """Fit a published-layout ``VaryModel`` to the train split ``recording``.

    Parameters: ``config`` (:class:`FitConfig`; keyword ``overrides`` replace
    fields), ``centers`` (n, 2) in stimulus px (default: estimated from the
    recording's STA), ``test`` split for the final report, ``device``, ``out``
    (checkpoint path, written with :func:`retcodec.save_model`); ``random_state`` sets
    ``FitConfig.seed``; ``validation_block`` which contiguous block of the train
    windows (of about ``1 / val_fraction`` equal blocks, :func:`split_windows`; Python
    indexing: -1 is the last, the default) is held out for early stopping -- ensemble members differ in it
    (:func:`fit_ensemble`).
    Returns the fitted model (eval mode, best validation weights) and its
    training history as a Dataset over ``epoch``.
    """
    if "random_state" in overrides:
        overrides["seed"] = overrides.pop("random_state")
    device = resolve_device(device)
    unknown = set(overrides) - {f for f in asdict(FitConfig())}
    if unknown:
        raise ConfigurationError(f"unknown fit option(s) {sorted(unknown)}; see retcodec.fitting.FitConfig")
    if config is not None and not isinstance(config, FitConfig):
        raise ConfigurationError(f"config must be a retcodec.fitting.FitConfig, got {type(config).__name__}")
    cfg = _checked_config(dataclasses.replace(config or FitConfig(), **overrides))
    if not isinstance(recording, xr.Dataset) or not {"stimulus", "rate"} <= set(recording.variables):
        raise ConfigurationError(f"fit() needs a recording Dataset with 'stimulus' and 'rate' "
                                 f"(retcodec.load_recording(..., split='train')), got {type(recording).__name__}")
    if out is not None:                   # before any work; never replaces a file retcodec did not write
        from retcodec.io.models import check_checkpoint_output
        out = check_checkpoint_output(out, "out")
    if recording.attrs.get("split", "train") != "train":
        raise ConfigurationError("fit() needs the train split (load_recording(..., split='train'))")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    stim, norm_stats = _zscore_train(recording)
    rate = np.asarray(recording["rate"].transpose("time", "cell").values, np.float32)
    if not np.isfinite(rate).all():
        raise NonFiniteError("the train rates hold NaN or Inf values")
    if stim.shape[0] != rate.shape[0]:
        raise ShapeError(f"stimulus has {stim.shape[0]} frames but rate has {rate.shape[0]} bins")
    cells = [int(c) for c in recording["cell"].values]
    how = "given"
    if centers is None:
        centers, how = find_centers(recording, cfg.history)
    centers = np.asarray(centers, np.int64).reshape(-1, 2)
    if len(centers) != len(cells):
        raise ShapeError(f"{len(centers)} centres for {len(cells)} cells")

    n_windows = stim.shape[0] - cfg.history
    n_val = max(int(n_windows * cfg.val_fraction), 1)
    if n_windows - n_val - 2 * cfg.history < 1:
        raise ShapeError(f"the train split has {stim.shape[0]} frames: too short to fit windows of {cfg.history} "
                         f"frames with a validation part ({cfg.val_fraction:.0%}); it needs well over "
                         f"{3 * cfg.history + 2} frames (minutes of recording)")
    train_idx, val_idx = split_windows(n_windows, n_val, cfg.history, validation_block)
    data = WindowBatches(torch.from_numpy(stim), torch.from_numpy(rate), cfg.history)

    hyps = cfg.hyps(len(cells), centers, dict(
        dataset=recording.attrs.get("experiment", "unknown"), stim_type=recording.attrs.get("stim_type", "unknown"),
        cells=cells, centers_source=how))
    model = build_model("VaryModel", hyps).to(device)
    _init_like_published(model, rate)
    model.meta.update(dataset=hyps["dataset"], stim_type=hyps["stim_type"], cells=cells,
                      img_shape=hyps["img_shape"], norm_stats=norm_stats, centers=centers)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.l2)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=cfg.lr_decay,
                                                       patience=cfg.lr_patience)
    history: dict[str, list[float]] = {"loss": [], "val_loss": [], "val_correlation": [], "lr": [], "seconds": []}
    best = (-math.inf, None, -1)
    bad = 0
    bar = _progress(range(cfg.epochs), progress, desc="fit")
    for epoch in bar:
        t0 = time.perf_counter()
        loss = _train_epoch(model, data, train_idx, opt, cfg, rng, device,
                            progress=progress, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        _check_not_diverged(model, loss, epoch)
        sample = recalibrate_batchnorm(model, data, train_idx, cfg, rng, device)
        calibrate_output(model, data, sample, device)
        vloss, vcor = _validate(model, data, val_idx, cfg, device)
        sched.step(vcor)
        for k, v in zip(history, (loss, vloss, vcor, opt.param_groups[0]["lr"], time.perf_counter() - t0)):
            history[k].append(float(v))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss:.4f}", val_r=f"{vcor:.3f}")
        if vcor > best[0]:
            best, bad = (vcor, copy.deepcopy(model.state_dict()), epoch), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    hist = xr.Dataset({k: ("epoch", np.asarray(v)) for k, v in history.items()},
                      coords={"epoch": np.arange(len(history["loss"]))},
                      attrs={"best_epoch": int(best[2]), "best_val_correlation": float(best[0]),
                             "validation_windows": f"{int(val_idx[0])}-{int(val_idx[-1])}",
                             "centers_source": how, "config": str(asdict(cfg))})
    model.meta["fit"] = dict(best_epoch=int(best[2]), val_correlation=float(best[0]), seed=int(cfg.seed),
                             validation_windows=[int(val_idx[0]), int(val_idx[-1])])
    if out is not None:
        from retcodec.io.models import save_model
        extra: dict[str, Any] = dict(epoch=int(best[2]), val_acc=float(best[0]),
                                     loss=history["loss"][best[2]] if best[2] >= 0 else float("nan"),
                                     val_loss=history["val_loss"][best[2]] if best[2] >= 0 else float("nan"))
        if test is not None:
            from retcodec.analysis.evaluation import evaluate
            ev = evaluate(model, test, device=device)
            extra["test_pearson"] = float(ev.attrs["median_correlation"])
            hist.attrs.update({f"test_{k}": v for k, v in ev.attrs.items() if k.startswith("median")})
        save_model(model, out, **extra)
    return model, hist


def member_paths(out: str | Path, members: int) -> list[Path]:
    """Checkpoint paths of an ensemble written at ``out``: ``out`` itself (member 0),
    then ``<stem>_m1<suffix>``, ``<stem>_m2<suffix>``, ..."""
    out = Path(out)
    return [out] + [out.with_name(f"{out.stem}_m{k}{out.suffix}") for k in range(1, members)]


def fit_ensemble(recording: xr.Dataset, members: int = ENSEMBLE_MEMBERS, *, out: str | Path | None = None,
                 config: FitConfig | None = None, **kwargs: Any) -> list[tuple[VaryModel, xr.Dataset]]:
    """Fit ``members`` models that differ in their seed and their held-out block.

    Member ``k`` is :func:`fit` with ``seed = config.seed + k`` and validation block
    ``-1 - k`` (the last block for member 0, so member 0 is the plain fit); every
    other keyword goes to :func:`fit`. ``out`` writes member ``k`` to
    ``member_paths(out, members)[k]``. Returns ``[(model, history), ...]``.
    """
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ConfigurationError(f"members must be a positive integer, got {members!r}")
    cfg = config or FitConfig()
    for name in ("random_state", "seed"):   # the base seed: member k adds k to it
        if name in kwargs:
            cfg = dataclasses.replace(cfg, seed=int(kwargs.pop(name)))
    paths: list[Any] = [None] * members
    if out is not None:                     # every member's path checked before any work (fit checks one)
        from retcodec.io.models import check_checkpoint_output
        paths = [check_checkpoint_output(p, "out") if members > 1 else p for p in member_paths(out, members)]
    fitted = []
    for k in range(members):
        model, hist = fit(recording, config=dataclasses.replace(cfg, seed=cfg.seed + k), out=paths[k],
                          validation_block=-1 - k, **kwargs)
        hist.attrs["member"] = k
        fitted.append((model, hist))
    return fitted


def _init_like_published(model: VaryModel, rate: np.ndarray) -> None:
    """Start the output batch norm at each cell's rate statistics.

    ``shift`` starts at softplus⁻¹(mean rate); ``scale`` is set after each
    epoch by :func:`calibrate_output`.
    """
    bn = model.sequential[model.layer_index["conv2"] + 2]
    with torch.no_grad():
        m = torch.as_tensor(rate.mean(axis=0), dtype=bn.shift.dtype)
        bn.shift.copy_(torch.log(torch.expm1(m.clamp_min(0.5))))   # softplus^-1(mean rate)


def _train_epoch(model: torch.nn.Module, data: WindowBatches, idx: np.ndarray, opt: torch.optim.Optimizer,
                 cfg: FitConfig, rng: np.random.Generator, device: str, progress: bool = False,
                 desc: str = "epoch") -> float:
    model.train()
    perm = torch.from_numpy(rng.permutation(idx))
    total, count = 0.0, 0
    starts = range(0, len(perm), cfg.batch_size)
    for s in _progress(starts, progress, desc=desc, leave=False, unit="batch"):
        b = perm[s:s + cfg.batch_size]
        x = data.windows(b).to(device)
        y = data.targets(b).to(device)
        pred = model(x)
        loss = torch.nn.functional.poisson_nll_loss(pred, y, log_input=False) + cfg.l1 * pred.abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(b)
        count += len(b)
    return total / max(count, 1)


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, data: WindowBatches, idx: np.ndarray, cfg: FitConfig,
                          rng: np.random.Generator, device: str) -> None:
    """Reset every batch-norm's running statistics to their average over ``cfg.recalibration_windows``.

    With the published momentum (0.01) and a few hundred updates the running
    statistics lag far behind the weights; eval-mode outputs then keep their
    correlation but lose their scale. A cumulative average over a fixed sample
    of training windows (dropout and noise off) makes eval match training.
    """
    bns = [m for m in model.modules() if isinstance(m, (AbsBatchNorm, torch.nn.modules.batchnorm._BatchNorm))]
    sample = torch.from_numpy(np.sort(rng.choice(idx, size=min(cfg.recalibration_windows, len(idx)),
                                                 replace=False)))
    if not bns:
        return sample
    saved = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.train()
    for k, s in enumerate(range(0, len(sample), cfg.batch_size)):
        for m in bns:
            m.momentum = 1.0 / (k + 1)                 # cumulative average of batch statistics
        model(data.windows(sample[s:s + cfg.batch_size]).to(device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()
    return sample


def calibrate_output(model: VaryModel, data: WindowBatches, sample: torch.Tensor, device: str,
                     iterations: int = 50) -> None:
    """Refit each cell's output scale and shift (``softplus(|γ| z + β)``) by Poisson likelihood.

    The output batch norm standardises the ganglion drive ``z``, so each cell's
    spread of rates is ``|γ|`` alone; Adam moves ``γ`` from its start of 1 by
    about ``lr`` per step, far too slowly for rates that vary by tens of Hz
    (measured: predictions correlated at 0.9 with the rates but had a tenth of
    their spread). The Poisson likelihood is convex in ``(γ, β)`` for a fixed
    ``z`` (softplus is convex and log-concave), so L-BFGS on a sample of
    training windows finds them exactly; training then continues from there.
    """
    bn = model.sequential[model.layer_index["conv2"] + 2]
    if not isinstance(bn, AbsBatchNorm):
        return
    drive: list[torch.Tensor] = []
    handle = bn.register_forward_hook(lambda m, inp, out: drive.append(inp[0].detach()))
    ys = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(sample), 512):
            b = sample[s:s + 512]
            model(data.windows(b).to(device))
            ys.append(data.targets(b).to(device))
    handle.remove()
    z = (torch.cat(drive) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    y = torch.cat(ys)
    gamma = bn.scale.detach().abs().clone().requires_grad_(True)
    beta = bn.shift.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([gamma, beta], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        rate = torch.nn.functional.softplus(gamma * z + beta)
        loss = torch.nn.functional.poisson_nll_loss(rate, y, log_input=False)
        loss.backward()
        return loss

    with torch.enable_grad():
        try:
            opt.step(closure)
        except RuntimeError:         # the line search overflowed (a loss of inf): keep the current scale and shift
            return
    with torch.no_grad():
        if torch.isfinite(gamma).all() and torch.isfinite(beta).all():
            bn.scale.copy_(gamma.abs())
            bn.shift.copy_(beta)


@torch.no_grad()
def _validate(model: torch.nn.Module, data: WindowBatches, idx: np.ndarray, cfg: FitConfig,
              device: str) -> tuple[float, float]:
    model.eval()
    preds, ys = [], []
    t = torch.from_numpy(idx)
    for s in range(0, len(t), 1024):
        b = t[s:s + 1024]
        preds.append(model(data.windows(b).to(device)).cpu())
        ys.append(data.targets(b))
    p, y = torch.cat(preds), torch.cat(ys)
    loss = float(torch.nn.functional.poisson_nll_loss(p, y, log_input=False))
    return loss, float(np.mean(np.nan_to_num(pearson(p.numpy().T, y.numpy().T), nan=0.0)))


def _progress(it: Sequence[int], enabled: bool, **kw: Any):
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, **kw)

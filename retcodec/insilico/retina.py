"""An in-silico retina with known cell types: the ground truth behind the bundled default.

The circuit (all parameters in :class:`CircuitParams`, deterministic under a seed):

* **Stimuli** (50 x 50 px, 100 Hz): binary white-noise checkerboards and natural
  scenes cut from scikit-learn's sample photographs (grey levels), shown as
  jittered patches with fixational drift and a new image or location about once
  per second. Stimuli are stored as uint8; the circuit sees contrast
  ``c = s / 127.5 - 1`` (so binary noise is +-1).
* **Bipolar subunits**, four types tiling space densely (one per pixel):
  ON/OFF x transient/sustained. Each has a difference-of-Gaussians spatial
  filter, a temporal filter (biphasic for transient, monophasic for sustained,
  all with at least one frame of latency) and a saturating rectifier
  ``s * tanh(max(v - theta, 0) / s)``.
  Their pre-rectification potential ``v`` is what an intracellular electrode
  records.
* **Amacrine pathways**: a wide-field transient amacrine pools rectified ON- and
  OFF-transient subunits over a wide Gaussian and inhibits the transient
  ganglion types; a narrow-field sustained amacrine pools ON-sustained subunits
  and inhibits OFF-sustained ganglion cells (crossover inhibition).
* **Ganglion cells** of four types (ON transient, OFF transient, OFF sustained,
  ON-OFF transient), several cells per type at distinct centres in 18-33 px.
  Each pools its subunit types with a Gaussian weight around its centre,
  subtracts its inhibition and passes the result through a softplus to a rate
  (Hz); the gain is calibrated once per cell so that its mean rate on natural
  scenes is ``mean_rate``. Spikes are Poisson in 10 ms bins; the published
  ``firing_rate_10ms`` is the spike train smoothed with a 10 ms Gaussian.

All temporal filtering is FIR and the longest pathway (bipolar then amacrine)
spans fewer than 40 frames, so a 40-frame CNN can in principle represent every
cell exactly.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage, signal

__all__ = ["CircuitParams", "temporal_filter", "lowpass_filter", "causal_fir", "dog", "gaussian_weights", "to_contrast", "white_noise", "grey_photographs", "natural_scenes", "boxes", "pad_to", "InSilicoRetina", "smooth_rate", "make_stimulus", "simulate_split", "SimulationPlan", "simulate", "simulate_interneurons", "shorten_recording", "DT", "SIZE", "BIPOLAR_TYPES", "AMACRINE_TYPES", "GANGLION_TYPES", "GANGLION_INPUTS", "GANGLION_INHIBITION", "EXPERIMENT"]

DT = 0.01                       # s per bin (100 Hz)
SIZE = 50                       # stimulus side, px
BIPOLAR_TYPES = ("on_transient", "on_sustained", "off_transient", "off_sustained")
AMACRINE_TYPES = ("widefield_transient", "narrowfield_on_sustained")
GANGLION_TYPES = ("on_transient", "off_transient", "off_sustained", "on_off_transient")
#: which bipolar types each ganglion type pools, with weights
GANGLION_INPUTS = {
    "on_transient": {"on_transient": 1.0},
    "off_transient": {"off_transient": 1.0},
    "off_sustained": {"off_sustained": 1.0},
    "on_off_transient": {"on_transient": 0.7, "off_transient": 0.7},
}
#: which amacrine inhibits each ganglion type, with weights
GANGLION_INHIBITION = {
    "on_transient": {"widefield_transient": 0.8},
    "off_transient": {"widefield_transient": 0.8},
    "off_sustained": {"narrowfield_on_sustained": 0.8},
    "on_off_transient": {"widefield_transient": 0.6},
}


@dataclass(frozen=True)
class CircuitParams:
    """Every number that defines the in-silico retina (stored with the files as JSON)."""

    seed: int = 0
    cells_per_type: int = 4
    center_range: tuple[float, float] = (19.0, 32.0)    # px, both axes
    min_cell_distance: float = 4.0                       # px, within a type
    # bipolar spatial filters (px): centre sigma, surround sigma, surround weight
    bipolar_center_sigma: dict = field(default_factory=lambda: {
        "on_transient": 1.2, "on_sustained": 1.0, "off_transient": 1.2, "off_sustained": 1.0})
    bipolar_surround_sigma: float = 4.0
    bipolar_surround_weight: float = 0.6
    # temporal filters: peak latency (s) of the fast lobe and the biphasic index
    bipolar_peak: dict = field(default_factory=lambda: {
        "on_transient": 0.05, "on_sustained": 0.08, "off_transient": 0.04, "off_sustained": 0.07})
    bipolar_biphasic: dict = field(default_factory=lambda: {
        "on_transient": 0.9, "on_sustained": 0.15, "off_transient": 0.9, "off_sustained": 0.15})
    bipolar_taps: int = 25                               # frames (250 ms)
    bipolar_threshold: float = 0.05
    bipolar_saturation: float = 0.5                      # synaptic saturation scale
    # amacrines
    widefield_sigma: float = 8.0
    narrowfield_sigma: float = 2.5
    amacrine_peak: float = 0.04                          # s, low-pass delay
    amacrine_taps: int = 14
    # ganglion pooling and output
    ganglion_rf_sigma: float = 2.5                       # px
    ganglion_threshold: float = 0.5                      # in generator std units
    ganglion_sharpness: float = 3.0                      # softplus slope (per std)
    mean_rate: float = 12.0                              # Hz on natural scenes
    rate_smoothing_sigma: float = 0.01                   # s, for firing_rate_10ms
    calibration_seconds: float = 60.0                    # natural scenes used to set gains

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CircuitParams":
        d = json.loads(text)
        d["center_range"] = tuple(d["center_range"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# --------------------------------------------------------------------------- filters
def temporal_filter(peak: float, biphasic: float, taps: int, dt: float = DT) -> np.ndarray:
    """Causal filter over lags ``0 .. taps-1`` frames; lag 0 is zero (one frame latency).

    A gamma-like fast lobe peaking at ``peak`` seconds minus ``biphasic`` times a
    slower, wider lobe of equal area; normalised to unit L2 norm, positive lobe first.
    """
    t = np.arange(taps) * dt
    n = 3.0
    tau = peak / n
    fast = (t / tau) ** n * np.exp(-t / tau)
    tau2 = 2.0 * tau
    slow = (t / tau2) ** n * np.exp(-t / tau2)
    f = fast / fast.sum() - biphasic * slow / slow.sum()
    f[0] = 0.0
    return (f / np.linalg.norm(f)).astype(np.float32)


def lowpass_filter(peak: float, taps: int, dt: float = DT) -> np.ndarray:
    """Monophasic causal low-pass (unit area) peaking at ``peak`` seconds, zero at lag 0."""
    f = temporal_filter(peak, 0.0, taps, dt).astype(np.float64)
    return (f / f.sum()).astype(np.float32)


def causal_fir(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``y[t] = sum_k f[k] x[t - k]`` along axis 0 (zero before the start)."""
    return signal.lfilter(f, [1.0], x, axis=0).astype(np.float32)


def dog(x: np.ndarray, center: float, surround: float, weight: float) -> np.ndarray:
    """Difference of Gaussians on each frame of ``(T, H, W)``; zero (mean grey) outside."""
    c = ndimage.gaussian_filter(x, sigma=(0, center, center), mode="constant")
    s = ndimage.gaussian_filter(x, sigma=(0, surround, surround), mode="constant")
    return c - weight * s


def gaussian_weights(centers: np.ndarray, sigma: float, size: int = SIZE) -> np.ndarray:
    """``(n, size*size)`` unit-sum Gaussian pooling weights around each (row, col) centre."""
    yy, xx = np.mgrid[0:size, 0:size]
    d2 = (yy[None] - centers[:, 0, None, None]) ** 2 + (xx[None] - centers[:, 1, None, None]) ** 2
    w = np.exp(-0.5 * d2 / sigma**2)
    w /= w.sum(axis=(1, 2), keepdims=True)
    return w.reshape(len(centers), -1).astype(np.float32)


# --------------------------------------------------------------------------- stimuli
def to_contrast(stim_uint8: np.ndarray) -> np.ndarray:
    """uint8 intensities -> contrast in [-1, 1] (float32)."""
    return (np.asarray(stim_uint8, dtype=np.float32) / 127.5 - 1.0).astype(np.float32)


def white_noise(n_frames: int, rng: np.random.Generator, checker: int = 2,
                size: int = SIZE) -> np.ndarray:
    """Binary checkerboard ``(T, size, size)`` uint8 in {0, 255}, a new frame every bin."""
    n = -(-size // checker)
    boxes = rng.integers(0, 2, size=(n_frames, n, n), dtype=np.uint8) * np.uint8(255)
    return np.repeat(np.repeat(boxes, checker, axis=1), checker, axis=2)[:, :size, :size]


def grey_photographs(downsample: int = 2) -> list[np.ndarray]:
    """scikit-learn's sample photographs as float32 grey images in [0, 255]."""
    from sklearn.datasets import load_sample_images
    out = []
    for img in load_sample_images().images:
        grey = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        if downsample > 1:
            h, w = (s // downsample * downsample for s in grey.shape)
            grey = grey[:h, :w].reshape(h // downsample, downsample, w // downsample, downsample).mean((1, 3))
        out.append(grey)
    return out


def natural_scenes(n_frames: int, rng: np.random.Generator, size: int = SIZE,
                   fixation: float = 1.0, drift_sigma: float = 0.35,
                   images: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Jittered natural-image patches ``(T, size, size)`` uint8.

    A new image and location every ``fixation`` s on average (exponential,
    at least 0.3 s), with a Gaussian random-walk drift of ``drift_sigma`` px per
    frame in between (fixational eye movements), rounded to whole pixels.
    """
    images = list(images) if images is not None else grey_photographs()
    out = np.empty((n_frames, size, size), dtype=np.uint8)
    t = 0
    margin = 20
    while t < n_frames:
        dur = max(int(round(rng.exponential(fixation) / DT)), int(0.3 / DT))
        dur = min(dur, n_frames - t)
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape
        y0 = rng.uniform(margin, h - size - margin)
        x0 = rng.uniform(margin, w - size - margin)
        drift = np.cumsum(rng.normal(0, drift_sigma, size=(dur, 2)), axis=0)
        drift = np.clip(drift, -margin + 1, margin - 1)
        for k in range(dur):
            yy = int(round(y0 + drift[k, 0]))
            xx = int(round(x0 + drift[k, 1]))
            out[t + k] = np.clip(img[yy:yy + size, xx:xx + size], 0, 255).astype(np.uint8)
        t += dur
    return out


def boxes(n_frames: int, rng: np.random.Generator, size: int = 38, checker: int = 2) -> np.ndarray:
    """The interneuron experiments' checkerboard ``(T, 38, 38)`` in {0, 1} (uint8)."""
    n = -(-size // checker)
    b = rng.integers(0, 2, size=(n_frames, n, n), dtype=np.uint8)
    return np.repeat(np.repeat(b, checker, axis=1), checker, axis=2)[:, :size, :size]


def pad_to(stim: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Zero-pad ``(T, h, w)`` centrally to ``(T, size, size)``."""
    _, h, w = stim.shape
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((stim.shape[0], size, size), dtype=stim.dtype)
    out[:, top:top + h, left:left + w] = stim
    return out


# --------------------------------------------------------------------------- circuit
class InSilicoRetina:
    """The ground-truth circuit. ``InSilicoRetina(seed)`` is fully determined by the seed.

    Attributes: ``params`` (:class:`CircuitParams`), ``cell_types`` (n,) str,
    ``centers`` (n, 2) float px (row, col), ``gain`` (n,) calibrated output gains.
    """

    #: frames of history any response depends on (bipolar + amacrine filters)
    history = 40

    def __init__(self, seed: int = 0, params: CircuitParams | None = None, calibrate: bool = True) -> None:
        self.params = params or CircuitParams(seed=seed)
        if params is not None and params.seed != seed:
            self.params = dataclasses.replace(params, seed=seed)
        p = self.params
        rng = np.random.default_rng([p.seed, 1])
        self.cell_types, self.centers = self._place_cells(rng)
        self.bipolar_filters = {b: temporal_filter(p.bipolar_peak[b], p.bipolar_biphasic[b], p.bipolar_taps)
                                for b in BIPOLAR_TYPES}
        self.amacrine_filter = lowpass_filter(p.amacrine_peak, p.amacrine_taps)
        self.pool = gaussian_weights(self.centers, p.ganglion_rf_sigma)   # (n, 2500)
        self.gain = np.ones(len(self.cell_types), np.float32)
        self.gen_mean = np.zeros(len(self.cell_types), np.float32)
        self.gen_std = np.ones(len(self.cell_types), np.float32)
        if calibrate:
            self._calibrate(np.random.default_rng([p.seed, 2]))

    # ---------------------------------------------------------------- layout
    def _place_cells(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        types, centers = [], []
        lo, hi = p.center_range
        for gtype in GANGLION_TYPES:
            placed: list[np.ndarray] = []
            while len(placed) < p.cells_per_type:
                c = rng.uniform(lo, hi, size=2)
                if all(np.linalg.norm(c - q) >= p.min_cell_distance for q in placed):
                    placed.append(c)
            types += [gtype] * p.cells_per_type
            centers += placed
        return np.array(types), np.round(np.array(centers), 1).astype(np.float32)

    @property
    def n_cells(self) -> int:
        return len(self.cell_types)

    # ---------------------------------------------------------------- pathways
    def bipolar_potentials(self, contrast: np.ndarray) -> dict[str, np.ndarray]:
        """Linear (pre-rectification) potential of a subunit of each type at every pixel: ``(T, H, W)``."""
        p = self.params
        out = {}
        spatial: dict[float, np.ndarray] = {}
        for b in BIPOLAR_TYPES:
            cs = p.bipolar_center_sigma[b]
            if cs not in spatial:
                spatial[cs] = dog(contrast, cs, p.bipolar_surround_sigma, p.bipolar_surround_weight)
            sign = 1.0 if b.startswith("on") else -1.0
            out[b] = sign * causal_fir(spatial[cs], self.bipolar_filters[b])
        return out

    def rectify(self, v: np.ndarray) -> np.ndarray:
        """Bipolar synaptic output: ``s * tanh(max(v - theta, 0) / s)`` (rectifying, saturating)."""
        p = self.params
        r = np.maximum(v - p.bipolar_threshold, 0.0, dtype=np.float32)
        return (p.bipolar_saturation * np.tanh(r / p.bipolar_saturation)).astype(np.float32)

    def amacrine_potentials(self, bipolar_out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Amacrine potential at every pixel ``(T, H, W)`` from rectified bipolar outputs."""
        p = self.params
        wide = ndimage.gaussian_filter(bipolar_out["on_transient"] + bipolar_out["off_transient"],
                                       sigma=(0, p.widefield_sigma, p.widefield_sigma), mode="constant")
        narrow = ndimage.gaussian_filter(bipolar_out["on_sustained"],
                                         sigma=(0, p.narrowfield_sigma, p.narrowfield_sigma), mode="constant")
        return {"widefield_transient": causal_fir(wide, self.amacrine_filter),
                "narrowfield_on_sustained": causal_fir(narrow, self.amacrine_filter)}

    def generator(self, contrast: np.ndarray) -> np.ndarray:
        """Each ganglion cell's input (excitation - inhibition) before its output nonlinearity: ``(n, T)``."""
        v = self.bipolar_potentials(contrast)
        b = {k: self.rectify(x) for k, x in v.items()}
        a = {k: np.maximum(x, 0.0) for k, x in self.amacrine_potentials(b).items()}
        T = contrast.shape[0]
        flat_b = {k: x.reshape(T, -1) for k, x in b.items()}
        flat_a = {k: x.reshape(T, -1) for k, x in a.items()}
        g = np.zeros((self.n_cells, T), np.float32)
        for i, gtype in enumerate(self.cell_types):
            w = self.pool[i]
            for btype, wb in GANGLION_INPUTS[gtype].items():
                g[i] += wb * (flat_b[btype] @ w)
            for atype, wa in GANGLION_INHIBITION[gtype].items():
                g[i] -= wa * (flat_a[atype] @ w)
        return g

    def rates(self, contrast: np.ndarray, chunk: int = 4000) -> np.ndarray:
        """True firing rates ``(n, T)`` in Hz for a contrast movie ``(T, 50, 50)``, in time chunks."""
        T = contrast.shape[0]
        out = np.empty((self.n_cells, T), np.float32)
        pad = self.history
        for s in range(0, T, chunk):
            a = max(0, s - pad)
            g = self.generator(contrast[a:s + chunk])[:, s - a:]
            out[:, s:s + chunk] = self._output(g)
        return out

    def _output(self, g: np.ndarray) -> np.ndarray:
        """Softplus of the standardised generator, scaled by the calibrated gain (Hz)."""
        p = self.params
        z = (g - self.gen_mean[:, None]) / self.gen_std[:, None]
        k = p.ganglion_sharpness
        return (self.gain[:, None] * np.logaddexp(0.0, k * (z - p.ganglion_threshold)) / k).astype(np.float32)

    def _calibrate(self, rng: np.random.Generator) -> None:
        """Standardise each cell's generator and set its gain so that its mean
        rate on natural scenes is ``mean_rate`` (one calibration movie from the seed)."""
        stim = to_contrast(natural_scenes(int(self.params.calibration_seconds / DT), rng))
        g = self.generator(stim)[:, self.history:]
        self.gen_mean = g.mean(axis=1).astype(np.float32)
        self.gen_std = (g.std(axis=1) + 1e-6).astype(np.float32)
        self.gain = np.ones(self.n_cells, np.float32)
        mean = self._output(g).mean(axis=1)
        self.gain = (self.params.mean_rate / mean).astype(np.float32)

    def interneuron_potentials(self, contrast: np.ndarray, kinds: Sequence[str],
                               positions: np.ndarray) -> np.ndarray:
        """Potential ``(n, T)`` of interneurons of the given types at ``(row, col)`` pixel positions."""
        v = self.bipolar_potentials(contrast)
        need_a = any(k in AMACRINE_TYPES for k in kinds)
        a = self.amacrine_potentials({k: self.rectify(x) for k, x in v.items()}) if need_a else {}
        out = np.empty((len(kinds), contrast.shape[0]), np.float32)
        for i, (kind, (r, c)) in enumerate(zip(kinds, np.asarray(positions, int))):
            src = v if kind in BIPOLAR_TYPES else a
            if kind not in src:
                raise ValueError(f"unknown interneuron type {kind!r}")
            out[i] = src[kind][:, r, c]
        return out

    # ---------------------------------------------------------------- recording
    def record(self, contrast: np.ndarray, rng: np.random.Generator, n_repeats: int = 1
               ) -> dict[str, np.ndarray]:
        """Simulate a recording: true rate, spike counts ``(repeat, n, T)`` and 10 ms rate estimates."""
        rate = self.rates(contrast)
        lam = rate * DT
        spikes = rng.poisson(lam[None].repeat(n_repeats, axis=0)).astype(np.uint8)
        est = smooth_rate(spikes, self.params.rate_smoothing_sigma)
        return {"true_rate": rate, "spikes": spikes, "rate": est}

    def truth(self) -> dict:
        """Per-cell ground truth and the circuit parameters, for the files' ``truth`` group."""
        return {"cell_type": self.cell_types, "center": self.centers,
                "gain": self.gain, "generator_mean": self.gen_mean,
                "generator_std": self.gen_std, "circuit": self.params.to_json()}


def smooth_rate(spikes: np.ndarray, sigma: float = 0.01, dt: float = DT) -> np.ndarray:
    """Spike counts ``(..., T)`` -> rate in Hz, Gaussian-smoothed along time (sigma in s)."""
    r = ndimage.gaussian_filter1d(spikes.astype(np.float32), sigma / dt, axis=-1, mode="constant")
    return (r / dt).astype(np.float32)


# --------------------------------------------------------------------------- experiments
def make_stimulus(kind: str, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``(T, 50, 50)`` stimulus of ``kind`` ("naturalscene" or "whitenoise")."""
    if kind == "naturalscene":
        return natural_scenes(n_frames, rng)
    if kind == "whitenoise":
        return white_noise(n_frames, rng)
    raise ValueError(f"unknown stimulus kind {kind!r}; use 'naturalscene' or 'whitenoise'")


def simulate_split(retina: InSilicoRetina, kind: str, seconds: float, rng: np.random.Generator,
                   n_repeats: int = 1, extra_bins: int = 0) -> dict[str, np.ndarray]:
    """One split in the published layout's terms.

    Returns ``stimulus`` (T, 50, 50) uint8, ``firing_rate_10ms`` (n, T + extra_bins)
    Hz (the trial average when ``n_repeats > 1``), ``binned`` (n, T + extra_bins)
    spike counts (summed over repeats), ``true_rate`` and, with repeats,
    ``repeats`` (n, n_repeats, T + extra_bins) single-trial rates whose mean is
    ``firing_rate_10ms``. ``extra_bins`` reproduces the published white-noise
    test quirk (one response bin more than stimulus frames).
    """
    n = int(round(seconds / DT))
    stim = make_stimulus(kind, n + extra_bins, rng)
    rec = retina.record(to_contrast(stim), rng, n_repeats=n_repeats)
    out = {"stimulus": stim[:n], "firing_rate_10ms": rec["rate"].mean(axis=0),
           "binned": rec["spikes"].sum(axis=0).astype(np.uint16), "true_rate": rec["true_rate"]}
    if n_repeats > 1:
        out["repeats"] = rec["rate"].transpose(1, 0, 2)
    return out


# --------------------------------------------------------------------------- files
@dataclass(frozen=True)
class SimulationPlan:
    """Lengths (s) of every simulated split; the defaults are the full-length files."""

    naturalscene_train: float = 420.0
    naturalscene_test: float = 60.0
    whitenoise_train: float = 300.0
    whitenoise_test: float = 60.0
    n_repeats: int = 10
    interneuron_seconds: float = 120.0
    bipolars_per_type: int = 2
    amacrines_per_type: int = 3
    vm_noise: float = 0.2                 # recording noise, fraction of each cell's Vm std


EXPERIMENT = "insilico"


def simulate(out_root: str | Path, seed: int = 0, plan: SimulationPlan | None = None,
             progress: bool = True, params: CircuitParams | None = None) -> dict[str, Path]:
    """Simulate the in-silico retina and write it in the published layouts.

    Writes ``<out_root>/insilico/{naturalscene,whitenoise}.h5`` (ganglion-cell
    recordings; ``truth`` group with cell types, centres and the circuit) and
    ``<out_root>/interneurons/{bipolars,amacrines}_insilico.h5`` (responses to
    boxes, ``truth/cell_type``). Deterministic under ``seed``. The white-noise
    test response has one bin more than its stimulus, like the published files.
    """
    from retcodec.io.recordings import write_recording

    plan = plan or SimulationPlan()
    out_root = Path(out_root)
    retina = InSilicoRetina(seed, params)
    truth = retina.truth()
    paths: dict[str, Path] = {}
    steps = [("naturalscene", plan.naturalscene_train, plan.naturalscene_test, 0),
             ("whitenoise", plan.whitenoise_train, plan.whitenoise_test, 1)]
    bar = _bar(len(steps) + 1, progress)
    for i, (kind, train_s, test_s, extra) in enumerate(steps):
        rng = np.random.default_rng([seed, 100 + i])
        train = simulate_split(retina, kind, train_s, rng)
        test = simulate_split(retina, kind, test_s, rng, n_repeats=plan.n_repeats, extra_bins=extra)
        for split in (train, test):
            split.pop("true_rate")
        attrs = {"experiment": EXPERIMENT, "stim_type": kind, "simulated": 1, "seed": seed,
                 "description": "in-silico retina (retcodec.insilico), NOT a recording of a real retina",
                 "binned_test": f"spike counts summed over the {plan.n_repeats} repeats",
                 "repeats_units": "Hz (single-trial 10 ms rate estimates)"}
        paths[kind] = write_recording(out_root / EXPERIMENT / f"{kind}.h5", train=train, test=test,
                                      attrs=attrs, truth=truth)
        bar.update()
    paths.update(simulate_interneurons(retina, out_root / "interneurons", plan, seed))
    bar.update()
    bar.close()
    return paths


def simulate_interneurons(retina: InSilicoRetina, folder: str | Path, plan: SimulationPlan,
                          seed: int = 0) -> dict[str, Path]:
    """Bipolar and amacrine "recordings" to a boxes stimulus, one file per class."""
    from retcodec.io.interneurons import write_interneurons

    rng = np.random.default_rng([seed, 200])
    raw = boxes(int(round(plan.interneuron_seconds / DT)), rng)
    contrast = pad_to(2.0 * raw.astype(np.float32) - 1.0)        # the published preparation
    out = {}
    for cls, kinds, per in (("bipolars", BIPOLAR_TYPES, plan.bipolars_per_type),
                            ("amacrines", AMACRINE_TYPES, plan.amacrines_per_type)):
        types = np.repeat(np.array(kinds), per)
        pos = rng.integers(14, 36, size=(len(types), 2))
        vm = retina.interneuron_potentials(contrast, list(types), pos)
        vm = vm + rng.normal(0, plan.vm_noise, vm.shape).astype(np.float32) * vm.std(axis=1, keepdims=True)
        vm = vm - vm.mean(axis=1, keepdims=True)                  # "detrended"
        out[cls] = write_interneurons(
            Path(folder) / f"{cls}_insilico.h5", {"boxes": (raw, vm.astype(np.float32))},
            truth={"cell_type": types, "center": pos.astype(np.float32), "circuit": retina.params.to_json()},
            attrs={"simulated": 1, "seed": seed, "description": "in-silico retina interneurons (retcodec.insilico)"})
    return out


def shorten_recording(src: str | Path, dst: str | Path, train_seconds: float) -> Path:
    """Copy a recording file keeping only the first ``train_seconds`` of its train split."""
    import h5py

    from retcodec.io.storage import atomic_path

    n = int(round(train_seconds / DT))
    dst = Path(dst)
    with h5py.File(src, "r") as fin, atomic_path(dst) as tmp, h5py.File(tmp, "w") as fout:
        for k, v in fin.attrs.items():
            fout.attrs[k] = v
        fout.attrs["shortened_train_seconds"] = float(train_seconds)
        for name in fin:
            if name != "train":
                fin.copy(fin[name], fout, name=name)
        _copy_truncated(fin["train"], fout.create_group("train"), n)
    return dst


def _copy_truncated(gin, gout, n: int) -> None:
    import h5py
    for k, v in gin.attrs.items():
        gout.attrs[k] = v
    for name, item in gin.items():
        if isinstance(item, h5py.Group):
            _copy_truncated(item, gout.create_group(name), n)
            continue
        data = item[:n] if name in ("stimulus", "time") else item[..., :n]
        gout.create_dataset(name, data=data, chunks=item.chunks and tuple(min(c, s) for c, s in zip(item.chunks, data.shape)),
                            compression=item.compression, compression_opts=item.compression_opts)


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, disable=not enabled, desc="simulate")

"""``benchmark.nc`` over retinas: distributions, bootstrap intervals, targets, figures, a page.

``benchmark.nc`` (a DataTree, readable by xarray and h5py):

* root: ``score (retina, method, metric)``; each retina's circuit parameters as
  coordinates along ``retina`` (``seed``, ``split``, ``n_types``, ``n_cells``, ...);
  ``summary (method, metric, statistic)`` with the median, quartiles, minimum,
  maximum and a bootstrap 95 % interval of the median over retinas; ``target_*``
  variables (``target``) saying which targets of the project's issues are met;
* ``/retinas/<name>``: the per-cell fit (``test_r``, ``feve``) with the true types.

Nothing in it depends on when or how fast it ran (times go to ``timings.json``), so the
same seeds give the same file.
"""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr

from retcodec.errors import MissingDataError
from retcodec.io.storage import atomic_path, write_netcdf_atomic

__all__ = ["STATISTICS", "TARGETS", "Target", "bootstrap_median_interval", "collect_scores", "summarize",
           "markdown_summary",
           "summary_statistics", "evaluate_targets", "OUTPUTS"]

STATISTICS = ("median", "q25", "q75", "min", "max", "ci_low", "ci_high", "n")
#: bootstrap resamples and seed of the intervals
N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
#: the figure/section of each output: (title, method prefix, metrics shown)
OUTPUTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "celltypes": ("Cell types", "celltypes/", ("ari", "k_error")),
    "silencing": ("Silencing predictions", "silencing/", ("spearman", "sign_accuracy")),
    "interneurons": ("Interneuron matching", "interneurons/", ("type_match_rate", "heldout_r", "chance_p95")),
    "modes": ("Modes", "modes/", ("stability", "r2", "n_modes", "l0")),
    "model": ("Model fit", "model/", ("test_r", "feve")),
}


@dataclass(frozen=True)
class Target:
    """A target of an issue, checked on the benchmark's retinas."""

    name: str
    description: str
    check: Callable[[xr.DataArray], float]      # score (retina, method, metric) -> value
    threshold: float
    higher_is_better: bool = True

    def met(self, value: float) -> bool:
        if not np.isfinite(value):
            return False
        return value >= self.threshold if self.higher_is_better else value <= self.threshold


def _value(method: str, metric: str, how: str) -> Callable[[xr.DataArray], float]:
    def check(score: xr.DataArray) -> float:
        if method not in score["method"].values:
            return float("nan")
        v = score.sel({"method": method, "metric": metric}).values.astype(float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return float("nan")
        return float({"median": np.median, "min": np.min}[how](v))
    return check


def _share_k_within_one(score: xr.DataArray) -> float:
    if "celltypes/primary" not in score["method"].values:
        return float("nan")
    k = score.sel({"method": "celltypes/primary", "metric": "k_error"}).values.astype(float)
    k = k[np.isfinite(k)]
    return float(np.mean(np.abs(k) <= 1)) if k.size else float("nan")


def _share_beating_baseline(score: xr.DataArray) -> float:
    methods = score["method"].values
    if not {"silencing/interneuron_prediction", "silencing/correlational_baseline"} <= set(methods):
        return float("nan")
    p = score.sel({"method": "silencing/interneuron_prediction", "metric": "spearman"}).values.astype(float)
    b = score.sel({"method": "silencing/correlational_baseline", "metric": "spearman"}).values.astype(float)
    ok = np.isfinite(p) & np.isfinite(b)
    return float(np.mean(p[ok] > b[ok])) if ok.any() else float("nan")


def _primary_vs_best_control(score: xr.DataArray) -> float:
    """Median ARI of the primary minus the best control's median ARI (>= 0: at least as good)."""
    methods = [m for m in score["method"].values if str(m).startswith("celltypes/")
               and m not in ("celltypes/primary", "celltypes/truth_labels", "celltypes/shuffled_labels")]
    if "celltypes/primary" not in score["method"].values or not methods:
        return float("nan")
    med = lambda m: float(np.nanmedian(score.sel({"method": m, "metric": "ari"}).values))   # noqa: E731
    return med("celltypes/primary") - max(med(m) for m in methods)


#: the scientific targets of the cell-type (#21) and experiments (#22) issues
TARGETS: tuple[Target, ...] = (
    Target("celltypes_median_ari", "cell types: median ARI of the primary >= 0.85",
           _value("celltypes/primary", "ari", "median"), 0.85),
    Target("celltypes_worst_ari", "cell types: no retina below ARI 0.6",
           _value("celltypes/primary", "ari", "min"), 0.6),
    Target("celltypes_k_within_one", "cell types: chosen k within +-1 of the truth on >= 80 % of retinas",
           _share_k_within_one, 0.8),
    Target("celltypes_primary_vs_controls", "cell types: primary at least as good as every control (median ARI)",
           _primary_vs_best_control, 0.0),
    Target("silencing_median_spearman", "silencing: median Spearman >= 0.6",
           _value("silencing/interneuron_prediction", "spearman", "median"), 0.6),
    Target("silencing_median_sign", "silencing: median sign accuracy >= 0.85 (pairs with |true effect| >= 0.2)",
           _value("silencing/interneuron_prediction", "sign_accuracy", "median"), 0.85),
    Target("silencing_beats_baseline", "silencing: beats the correlational baseline on every retina",
           _share_beating_baseline, 1.0),
)


def bootstrap_median_interval(values: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
                              level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values`` (finite ones; NaN if none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    medians = np.median(v[rng.integers(0, v.size, size=(n_boot, v.size))], axis=1)
    a = (1 - level) / 2
    return float(np.quantile(medians, a)), float(np.quantile(medians, 1 - a))


def summary_statistics(score: xr.DataArray) -> xr.DataArray:
    """``(method, metric, statistic)``: median, quartiles, min, max, bootstrap 95 % interval, n."""
    out = np.full((score.sizes["method"], score.sizes["metric"], len(STATISTICS)), np.nan)
    for i in range(score.sizes["method"]):
        for j in range(score.sizes["metric"]):
            v = score.values[:, i, j].astype(float)
            v = v[np.isfinite(v)]
            if v.size == 0:
                out[i, j, -1] = 0
                continue
            lo, hi = bootstrap_median_interval(v)
            out[i, j] = [np.median(v), np.quantile(v, 0.25), np.quantile(v, 0.75), v.min(), v.max(), lo, hi, v.size]
    return xr.DataArray(out, dims=("method", "metric", "statistic"),
                        coords={"method": score["method"].values, "metric": score["metric"].values,
                                "statistic": list(STATISTICS)}, name="summary",
                        attrs={"long_name": "distribution of each score over retinas",
                               "interval": f"percentile bootstrap of the median, {N_BOOTSTRAP} resamples, "
                                           f"seed {BOOTSTRAP_SEED}, 95 %"})


def evaluate_targets(score: xr.DataArray) -> xr.Dataset:
    """Each target's value on these retinas, its threshold and whether it is met."""
    names = [t.name for t in TARGETS]
    values = [t.check(score) for t in TARGETS]
    return xr.Dataset({"target_value": ("target", np.asarray(values, float)),
                       "target_threshold": ("target", np.asarray([t.threshold for t in TARGETS], float)),
                       "target_met": ("target", np.asarray([t.met(v) for t, v in zip(TARGETS, values)], np.int8))},
                      coords={"target": names, "target_description": ("target", [t.description for t in TARGETS])})


def collect_scores(paths: Sequence[str | Path]) -> tuple[xr.DataArray, dict[str, xr.Dataset], dict[str, dict]]:
    """Stack retinas' ``scores.nc`` into ``score (retina, method, metric)`` (union of methods)."""
    if not paths:
        raise MissingDataError("no retina scores to summarise")
    per: dict[str, xr.Dataset] = {}
    params: dict[str, dict] = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise MissingDataError(f"{p} does not exist: that retina has not been scored")
        ds = xr.load_dataset(p, engine="h5netcdf")
        name = p.parent.name
        if name in per:
            raise MissingDataError(f"two scored retinas are both named {name!r} ({p}); summarise one benchmark "
                                   f"folder at a time")
        per[name] = ds
        params[name] = json.loads(ds.attrs.get("parameters", "{}"))
    methods = list(dict.fromkeys(m for ds in per.values() for m in ds["method"].values.tolist()))
    metrics = list(next(iter(per.values()))["metric"].values.tolist())
    score = xr.concat([ds["score"].reindex(method=methods) for ds in per.values()], dim="retina")
    score = score.assign_coords(retina=list(per))
    return score.transpose("retina", "method", "metric"), per, params


def summarize(paths: Sequence[str | Path], out: str | Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``benchmark.nc``, ``figures/*.png`` and ``summary.html`` for scored retinas."""
    from retcodec import __version__

    out = Path(out)
    score, per, params = collect_scores(paths)
    keys = sorted({k for p in params.values() for k in p})
    coords = {k: ("retina", [params[r].get(k, np.nan) for r in score["retina"].values]) for k in keys}
    coords["split"] = ("retina", [str(per[r].attrs.get("split", "")) for r in score["retina"].values])
    score = score.assign_coords(**coords)
    root = xr.Dataset({"score": score, "summary": summary_statistics(score)})
    root = root.merge(evaluate_targets(score))
    root.attrs.update(retcodec_version=__version__, n_retinas=int(score.sizes["retina"]),
                      config=json.dumps(config or {}, sort_keys=True, default=str),
                      description="scores of every method against the truth of in-silico retinas")
    tree = xr.DataTree(root)
    for name, ds in per.items():
        fit = ds[["test_r", "feve"]].drop_vars(["method", "metric"], errors="ignore")
        # only what defines the retina, never where its files were (the same seeds give the same file)
        fit.attrs = {k: v for k, v in ds.attrs.items() if k in ("seed", "split", "quick", "parameters")}
        tree[f"retinas/{name}"] = xr.DataTree(fit)
    path = write_netcdf_atomic(tree, out / "benchmark.nc")
    figures = draw_figures(score, per, out / "figures")
    page = write_page(root, figures, per, out / "summary.html")
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(markdown_summary(root), encoding="utf-8")
    return {"benchmark": str(path), "summary": str(page), "markdown": str(out / "summary.md"),
            "figures": [str(f) for f in figures]}


#: the rows of the markdown summary: (output, method, metrics)
MARKDOWN_ROWS = (("cell types", "celltypes/primary", ("ari", "k_error")),
                 ("cell types", "celltypes/drive_conv0", ("ari", "k_error")),
                 ("cell types", "celltypes/drive_conv1", ("ari", "k_error")),
                 ("cell types", "celltypes/surprisal_modes_conv1", ("ari", "k_error")),
                 ("cell types", "celltypes/activation_modes_conv1", ("ari", "k_error")),
                 ("cell types", "celltypes/rates", ("ari", "k_error")),
                 ("silencing", "silencing/interneuron_prediction", ("spearman", "sign_accuracy")),
                 ("silencing", "silencing/correlational_baseline", ("spearman", "sign_accuracy")),
                 ("interneurons", "interneurons/best_unit", ("type_match_rate", "heldout_r", "chance_p95")),
                 ("modes", "modes/conv0", ("stability", "l0")),
                 ("modes", "modes/conv1", ("stability", "l0")),
                 ("model fit", "model/fit", ("test_r", "feve")))


def markdown_summary(root: xr.Dataset) -> str:
    """The main scores (median [bootstrap 95 % interval], worst to best retina) and the targets as
    markdown tables, e.g. for a README."""
    s = root["summary"]
    lines = [f"{int(root.attrs.get('n_retinas', root.sizes['retina']))} retinas "
             f"({', '.join(str(r) for r in root['retina'].values)})", "",
             "| output | method | metric | median [95 % CI] | range over retinas |", "|---|---|---|---|---|"]
    for output, method, metrics in MARKDOWN_ROWS:
        if method not in s["method"].values:
            continue
        for k in metrics:
            v = s.sel({"method": method, "metric": k})
            if int(v.sel(statistic="n")) == 0:
                continue
            g = lambda name: float(v.sel(statistic=name))   # noqa: E731
            lines.append(f"| {output} | {method.split('/', 1)[1]} | {k} | {_fmt(g('median'))} "
                         f"[{_fmt(g('ci_low'))}, {_fmt(g('ci_high'))}] | {_fmt(g('min'))} to {_fmt(g('max'))} |")
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for d, v, m in zip(root["target_description"].values, root["target_value"].values, root["target_met"].values):
        lines.append(f"| {str(d).replace('|', chr(92) + '|')} | {_fmt(float(v))} | {'yes' if int(m) else '**missed**'} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figures
def draw_figures(score: xr.DataArray, per: dict[str, xr.Dataset], folder: Path) -> list[Path]:
    """One figure per output: every retina's score per method, median and its interval."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, (title, prefix, metrics) in OUTPUTS.items():
        methods = [m for m in score["method"].values.tolist() if m.startswith(prefix)]
        metrics = [k for k in metrics if np.isfinite(score.sel({"method": methods, "metric": k}).values).any()] \
            if methods else []
        if not metrics:
            continue
        if key == "model":
            fig = _fit_figure(per, score)
        else:
            fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics) + 1.5, 0.45 * len(methods) + 1.6),
                                     squeeze=False, constrained_layout=True)
            for ax, metric in zip(axes[0], metrics):
                _strip(ax, score, methods, metric, prefix, show_labels=ax is axes[0][0])
        how = ("dots: cells; red: median over the retina's cells; FEVE below -1 drawn at -1" if key == "model"
               else "dots: retinas (grey: references); red: median; black: its bootstrap 95 % interval")
        fig.suptitle(f"{title} on {score.sizes['retina']} retinas ({how})", fontsize=10)
        path = folder / f"benchmark_{key}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append(path)
    return written


def _strip(ax, score: xr.DataArray, methods: list[str], metric: str, prefix: str, show_labels: bool) -> None:
    rng = np.random.default_rng(0)
    for i, m in enumerate(methods):
        v = score.sel({"method": m, "metric": metric}).values.astype(float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        y = i + rng.uniform(-0.15, 0.15, v.size)
        reference = m.endswith(("truth_labels", "shuffled_labels", "/truth"))
        ax.scatter(v, y, s=14, color="0.6" if reference else "C0", alpha=0.8, zorder=2)
        lo, hi = bootstrap_median_interval(v)
        ax.plot([lo, hi], [i, i], color="k", lw=2, zorder=3)
        ax.plot([np.median(v)], [i], marker="|", color="C3", ms=14, mew=2.5, zorder=4)
    if metric in ("k_error", "n_modes"):
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yticks(range(len(methods)))
    ax.set_yticklabels([m[len(prefix):] for m in methods] if show_labels else [])
    ax.invert_yaxis()
    ax.set_xlabel(metric.replace("_", " "))
    ax.grid(axis="x", alpha=0.3)


def _fit_figure(per: dict[str, xr.Dataset], score: xr.DataArray):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 0.32 * len(per) + 1.8), squeeze=False, constrained_layout=True)
    names = list(per)
    for ax, metric in zip(axes[0], ("test_r", "feve")):
        for i, name in enumerate(names):
            ds = per[name]
            values = np.maximum(ds[metric].values, -1.0) if metric == "feve" else ds[metric].values
            ax.scatter(values, np.full(ds.sizes["cell"], i) + np.random.default_rng(i).uniform(
                -0.15, 0.15, ds.sizes["cell"]), s=8, color="C0", alpha=0.6)
            ax.plot([max(float(np.nanmedian(ds[metric].values)), -1.0)], [i], marker="|", color="C3", ms=12, mew=2.5)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names if metric == "test_r" else [])
        ax.invert_yaxis()
        ax.set_xlabel({"test_r": "test correlation per cell", "feve": "FEVE per cell"}[metric])
        ax.grid(axis="x", alpha=0.3)
    return fig


# --------------------------------------------------------------------------- page
def _fmt(x: float, digits: int = 2) -> str:
    return "–" if not np.isfinite(x) else f"{x:.{digits}f}"


def summary_table(root: xr.Dataset, prefix: str, metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per method under ``prefix``): per metric the median with its bootstrap 95 %
    interval and the range over retinas (worst to best)."""
    s = root["summary"]
    shown = [k for k in metrics if any(int(s.sel({"method": m, "metric": k, "statistic": "n"})) > 0
                                       for m in s["method"].values.tolist() if m.startswith(prefix))]
    header = ["method"] + [h for k in shown for h in (f"{k}: median [95 % CI]", f"{k}: range")] + ["retinas"]
    rows = []
    for m in s["method"].values.tolist():
        if not m.startswith(prefix):
            continue
        cells, n = [m[len(prefix):]], 0
        for k in shown:
            v = s.sel({"method": m, "metric": k})
            g = lambda name: float(v.sel(statistic=name))   # noqa: E731
            n = max(n, int(g("n")))
            cells += [f"{_fmt(g('median'))} [{_fmt(g('ci_low'))}, {_fmt(g('ci_high'))}]",
                      f"{_fmt(g('min'))} to {_fmt(g('max'))}"]
        rows.append(cells + [str(n)])
    return header, rows


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def write_page(root: xr.Dataset, figures: Sequence[Path], per: dict[str, xr.Dataset], path: Path) -> Path:
    """The summary page: targets, one section per output (table and figure), the retinas."""
    figs = {p.stem.replace("benchmark_", ""): p for p in figures}
    parts = [f"<h1>retcodec benchmark: {int(root.attrs['n_retinas'])} in-silico retinas</h1>",
             "<p>Every method scored against the circuit's truth: the median over retinas with a bootstrap 95 % "
             "interval, and the range (worst and best retina; quartiles are in benchmark.nc). Reference rows "
             "(<code>truth_labels</code>, <code>shuffled_labels</code>, <code>silencing/truth</code>) check the "
             "scoring itself: they must read 1, about 0 and 1.</p>", "<h2>Targets</h2>"]
    rows = [[str(d), _fmt(float(v)), _fmt(float(t)), "met" if int(m) else "MISSED"]
            for d, v, t, m in zip(root["target_description"].values, root["target_value"].values,
                                  root["target_threshold"].values, root["target_met"].values)]
    parts.append(_html_table(["target", "value", "threshold", ""], rows))
    for key, (title, prefix, metrics) in OUTPUTS.items():
        header, rows = summary_table(root, prefix, metrics)
        if not rows:
            continue
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(_html_table(header, rows))
        if key in figs:
            data = base64.b64encode(figs[key].read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>")
    params = [k for k in ("seed", "split", "n_types", "n_cells", "n_sibling_types", "n_object_motion_types",
                          "mean_rate", "n_repeats", "train_seconds") if k in root.coords]
    rows = [[str(r)] + [_fmt(float(root[k].values[i]), 1) if k not in ("split",) else str(root[k].values[i])
                        for k in params]
            for i, r in enumerate(root["retina"].values)]
    parts.append("<h2>Retinas</h2>")
    parts.append(_html_table(["retina"] + params, rows))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse;font-size:0.9em}td,th{border-bottom:1px solid #ddd;padding:3px 8px;"
             "text-align:left}.scroll{overflow-x:auto;margin-bottom:1em}img{max-width:100%;margin:0.5em 0 1.5em}")
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>retcodec benchmark</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path

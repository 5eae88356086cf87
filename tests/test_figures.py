"""Figures: each plot runs on small labelled inputs, draws, labels its axes; save_figure is atomic."""
from __future__ import annotations

import io

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import leaves_list, linkage

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.report.figures import (plot_contribution_heatmap, plot_fit_quality, plot_interneuron_matches,
                              plot_irf_filters, plot_mode_cell_matrix, plot_modes, plot_sparsity,
                              save_figure)

RNG = np.random.default_rng(0)
N_TIME = 200
TIME = np.arange(N_TIME) * 0.01


def _render(fig: Figure) -> Figure:
    """Draw the figure (layout, legends, colour bars) at low resolution; fails on drawing errors."""
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    return fig


def _images(ax):
    return ax.get_images()


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def contrib_node():
    values = RNG.normal(size=(N_TIME, 8, 2))
    values[..., 0] = -np.abs(values[..., 0])           # C- <= 0, C+ >= 0
    values[..., 1] = 2 * np.abs(values[..., 1])
    return xr.Dataset({"contribution": (("time", "channel", "sign"), values)},
                      coords={"time": TIME, "channel": np.arange(8), "sign": ["neg", "pos"]},
                      attrs={"layer": "conv1"})


@pytest.fixture
def rates():
    return xr.DataArray(RNG.gamma(2.0, 5.0, (N_TIME, 5)), dims=("time", "cell"),
                        coords={"time": TIME, "cell": [3, 5, 8, 13, 21]})


@pytest.fixture
def loadings():
    return xr.DataArray(RNG.random((N_TIME, 3)), dims=("time", "mode"),
                        coords={"time": TIME, "mode": np.arange(3)})


def _match_dataset(n=6, with_maps=True):
    classes = ["bipolar"] * 4 + ["amacrine"] * (n - 4)
    heldout = np.linspace(0.9, -0.05, n)
    data = {"heldout_correlation": ("interneuron", heldout),
            "insample_correlation": ("interneuron", heldout + 0.1),
            "chance_mean": ("interneuron", np.zeros(n)),
            "chance_p95": ("interneuron", np.full(n, 0.12)),
            "p_value": ("interneuron", np.where(heldout > 0.12, 0.01, 0.5)),
            "best_layer": ("interneuron", np.array(["conv0", "conv1"] * (n // 2))),
            "best_channel": ("interneuron", np.arange(n) % 4),
            "best_y": ("interneuron", np.arange(n) + 3),
            "best_x": ("interneuron", 10 - np.arange(n))}
    types = ["on", "off", "on", "off"] + ["unknown"] * (n - 4)
    ds = xr.Dataset(data, coords={"interneuron": [f"file/{i}" for i in range(n)],
                                  "cell_class": ("interneuron", classes),
                                  "cell_type": ("interneuron", types)})
    if with_maps:
        for layer, size, offset in (("conv0", 36, 7.0), ("conv1", 26, 12.0)):
            maps = RNG.uniform(-0.5, 0.5, (n, 4, size, size)).astype(np.float32)
            ds[f"correlation_map_{layer}"] = xr.Variable(
                ("interneuron", f"channel_{layer}", f"y_{layer}", f"x_{layer}"), maps,
                {"stimulus_pixel_offset": offset})
    return ds


# --------------------------------------------------------------------------- contributions
def test_contribution_heatmap_panels_share_time_and_a_symmetric_scale(contrib_node, rates, loadings):
    fig = _render(plot_contribution_heatmap(contrib_node, rates, loadings))
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if _images(ax)]
    assert len(panels) == 4 and len(fig.axes) == 8                   # each panel has a colour bar
    titles = [ax.get_title(loc="left") for ax in panels]
    assert titles[0].startswith("positive") and titles[1].startswith("negative") and "conv1" in titles[0]
    assert [ax.get_ylabel() for ax in panels] == ["channel", "channel", "cell", "mode"]
    assert panels[-1].get_xlabel() == "time (s)"
    norms = [_images(ax)[0].norm for ax in panels[:2]]
    vmax = np.abs(contrib_node.contribution.values).max()
    for norm in norms:
        assert norm.vmin == pytest.approx(-vmax) and norm.vmax == pytest.approx(vmax)
    colorbar_labels = {ax.get_ylabel() for ax in fig.axes if not _images(ax)}
    assert {"contribution", "rate (Hz)", "loading"} <= colorbar_labels
    # the C+ image holds the pos column, channels as rows
    np.testing.assert_array_equal(_images(panels[0])[0].get_array(),
                                  contrib_node.contribution.sel(sign="pos").values.T)


def test_contribution_heatmap_time_slice_and_bad_input(contrib_node, rates):
    fig = _render(plot_contribution_heatmap(contrib_node, rates, time_slice=(0.5, 0.99)))
    image = _images(fig.axes[0])[0]
    assert image.get_array().shape == (8, 50)
    left, right, _, _ = image.get_extent()
    assert left == pytest.approx(0.495) and right == pytest.approx(0.995)
    with pytest.raises(ShapeError, match="missing \\['sign'\\]"):
        plot_contribution_heatmap(contrib_node.isel(sign=0, drop=True))
    with pytest.raises(ShapeError, match="rates must have dims"):
        plot_contribution_heatmap(contrib_node, rates.rename(cell="unit"))
    with pytest.raises(ShapeError, match="no time points"):
        plot_contribution_heatmap(contrib_node, time_slice=(5.0, 6.0))
    with pytest.raises(ConfigurationError, match="no variable 'contribution'"):
        plot_contribution_heatmap(contrib_node.rename(contribution="c"))


# --------------------------------------------------------------------------- modes and types
def test_mode_cell_matrix_rows_follow_the_dendrogram():
    corr = xr.DataArray(RNG.normal(size=(12, 4)), dims=("cell", "mode"),
                        coords={"cell": np.arange(100, 112), "mode": np.arange(4)})
    tree = linkage(corr.values, "ward")
    labels = np.repeat([0, 1, 2], 4)
    types = np.array(["on", "off"] * 6)
    fig = _render(plot_mode_cell_matrix(corr, labels, tree, true_types=types))
    assert len(fig.axes) == 5                         # dendrogram, 2 strips, heat map, colour bar
    heatmap = next(ax for ax in fig.axes if ax.get_xlabel() == "mode")
    order = leaves_list(tree)
    np.testing.assert_array_equal(_images(heatmap)[0].get_array(), corr.values[order])
    assert [t.get_text() for t in heatmap.get_yticklabels()] == [str(c) for c in corr.cell.values[order]]
    assert [legend.get_title().get_text() for legend in fig.legends] == ["cluster", "true type"]
    # without a linkage the rows are grouped by cluster label
    fig = _render(plot_mode_cell_matrix(corr, labels[::-1]))
    assert len(fig.axes) == 3
    with pytest.raises(ShapeError, match="one value per cell"):
        plot_mode_cell_matrix(corr, labels[:5])
    with pytest.raises(ShapeError, match="linkage"):
        plot_mode_cell_matrix(corr, labels, tree[:-1])
    with pytest.raises(ShapeError, match="missing \\['mode'\\]"):
        plot_mode_cell_matrix(corr.rename(mode="component"))


def test_modes_one_bar_chart_per_mode():
    modes = xr.DataArray(RNG.random((5, 8, 2)), dims=("mode", "channel", "sign"),
                         coords={"mode": np.arange(5), "channel": np.arange(8), "sign": ["neg", "pos"]})
    fig = _render(plot_modes(modes, ncols=3))
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes] == [f"mode {m}" for m in range(5)]
    assert all(len(ax.patches) == 16 for ax in fig.axes)             # 8 channels x 2 signs
    assert fig.axes[0].get_ylabel() == "weight" and fig.axes[-1].get_xlabel() == "channel"
    heights = [p.get_height() for p in fig.axes[2].patches]
    np.testing.assert_allclose(sorted(heights), np.sort(modes.values[2].ravel()))
    with pytest.raises(ShapeError, match="missing \\['sign'\\]"):
        plot_modes(modes.isel(sign=0, drop=True))


# --------------------------------------------------------------------------- receptive fields
def test_irf_filters_images_and_temporal_filters_in_seconds():
    lag = np.arange(1, 41) * 0.01
    spatial = xr.DataArray(RNG.normal(size=(3, 2, 10, 10)), dims=("combination", "cell", "y", "x"),
                           coords={"combination": ["1", "1+2", "3"], "cell": [4, 9],
                                   "y": np.arange(20, 30), "x": np.arange(15, 25)})
    temporal = xr.DataArray(RNG.normal(size=(3, 40)), dims=("combination", "lag"),
                            coords={"combination": ["1", "1+2", "3"], "lag": lag})
    fig = _render(plot_irf_filters(spatial, temporal))
    image_axes = [ax for ax in fig.axes if _images(ax)]
    line_axes = [ax for ax in fig.axes if ax.get_lines()]
    assert len(image_axes) == 6 and len(line_axes) == 3 and len(fig.axes) == 10    # + colour bar
    norm = _images(image_axes[0])[0].norm
    assert norm.vmin == -norm.vmax == pytest.approx(-np.abs(spatial.values).max())
    np.testing.assert_allclose(line_axes[0].get_lines()[0].get_xdata(), lag)
    assert line_axes[-1].get_xlabel() == "lag (s)"
    assert _images(image_axes[0])[0].get_extent() == [14.5, 24.5, 29.5, 19.5]      # stimulus pixels
    fig = _render(plot_irf_filters(spatial.isel(cell=0, drop=True), temporal))
    assert len(fig.axes) == 7
    with pytest.raises(ShapeError, match="same combinations"):
        plot_irf_filters(spatial, temporal.isel(combination=[0, 1]))
    with pytest.raises(ShapeError, match="missing \\['lag'\\]"):
        plot_irf_filters(spatial, temporal.rename(lag="delay"))


# --------------------------------------------------------------------------- interneurons
def test_interneuron_matches_summary_and_best_maps():
    match = _match_dataset()
    fig = _render(plot_interneuron_matches(match, n_maps=3))
    assert len(fig.axes) == 1 + 3 + 1
    summary = fig.axes[0]
    assert summary.get_ylabel() == "Pearson r with best unit"
    labels = [t.get_text() for t in summary.get_xticklabels()]
    assert labels[:4] == ["file/4", "file/5", "file/0", "file/1"]    # amacrine first, then by r
    legend = [t.get_text() for t in summary.get_legend().get_texts()]
    assert {"on", "off", "unknown", "in-sample (biased)"} <= set(legend)
    # the best cell's map: its best channel of its best layer, in stimulus pixels, unit marked
    first_map = fig.axes[1]
    expected = match.correlation_map_conv0.isel(interneuron=0, channel_conv0=0).values
    np.testing.assert_array_equal(_images(first_map)[0].get_array(), expected)
    (x, y) = first_map.get_lines()[0].get_xydata()[0]
    assert (x, y) == (10 + 7, 3 + 7)
    assert first_map.get_xlabel() == "x (stimulus px)"
    fig = _render(plot_interneuron_matches(_match_dataset(with_maps=False)))
    assert len(fig.axes) == 1
    with pytest.raises(ConfigurationError, match="chance_p95"):
        plot_interneuron_matches(match.drop_vars("chance_p95"))


# --------------------------------------------------------------------------- statistics
def test_sparsity_bars_and_boxes():
    layers = ["conv0", "conv1"]
    summary = xr.Dataset({"contribution_sparsity": ("layer", [0.6, 0.7]),
                          "activation_sparsity": ("layer", [0.2, 0.3])}, coords={"layer": layers})
    fig = _render(plot_sparsity(summary))
    ax, = fig.axes
    assert sorted(p.get_height() for p in ax.patches) == [0.2, 0.3, 0.6, 0.7]
    assert [t.get_text() for t in ax.get_xticklabels()] == layers
    assert ax.get_ylabel() == "Hoyer sparsity across channels" and ax.get_ylim() == (0, 1)
    per_window = RNG.random((2, 50))
    per_window[0, :5] = np.nan                                        # e.g. all-zero windows
    per_time = xr.Dataset({"contribution_sparsity": (("layer", "time"), per_window),
                           "activation_sparsity": (("layer", "time"), RNG.random((2, 50)))},
                          coords={"layer": layers})
    fig = _render(plot_sparsity(per_time))
    assert len(fig.axes[0].patches) == 4                               # one box per layer and quantity
    with pytest.raises(ConfigurationError, match="activation_sparsity"):
        plot_sparsity(summary.drop_vars("activation_sparsity"))
    with pytest.raises(ShapeError, match="layer"):
        plot_sparsity(summary.rename(layer="depth"))


def test_fit_quality_scatter_with_identity_line():
    n = 8
    evaluation = xr.Dataset({"correlation": ("cell", np.linspace(0.3, 0.8, n)),
                             "oracle": ("cell", np.linspace(0.5, 0.95, n)),
                             "reliable": ("cell", np.arange(n) > 0)},
                            coords={"cell": np.arange(n), "cell_type": ("cell", ["on", "off"] * 4)},
                            attrs={"median_fraction_of_oracle": 0.8})
    fig = _render(plot_fit_quality(evaluation))
    ax, = fig.axes
    identity = ax.get_lines()[0]
    np.testing.assert_allclose(identity.get_xdata(), identity.get_ydata())
    assert ax.get_xlabel() == "oracle correlation (repeats)" and ax.get_ylabel() == "model correlation"
    points = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    assert points.shape == (n, 2)
    np.testing.assert_allclose(sorted(points[:, 0]), evaluation.oracle.values)
    assert {"on", "off", "unreliable"} <= {t.get_text() for t in ax.get_legend().get_texts()}
    assert "0.80" in ax.get_title()
    with pytest.raises(ConfigurationError, match="oracle"):
        plot_fit_quality(evaluation.drop_vars("oracle"))
    with pytest.raises(ShapeError, match="correlation must have dims"):
        plot_fit_quality(evaluation.assign(correlation=(("cell", "rep"), np.ones((n, 2)))))


# --------------------------------------------------------------------------- saving
def test_save_figure_writes_png_and_svg_atomically(tmp_path, contrib_node):
    fig = plot_contribution_heatmap(contrib_node)
    paths = save_figure(fig, tmp_path / "figs" / "fig2.v1")
    assert [p.name for p in paths] == ["fig2.v1.png", "fig2.v1.svg"]
    png, svg = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert b"<svg" in svg[:2000] and len(svg) > 1000
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["fig2.v1.png", "fig2.v1.svg"]
    # a failing format leaves neither a partial file nor a temporary one
    with pytest.raises(ValueError):
        save_figure(fig, tmp_path / "figs" / "broken", formats=("nosuchformat",))
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["fig2.v1.png", "fig2.v1.svg"]
    with pytest.raises(ConfigurationError, match="Figure"):
        save_figure("not a figure", tmp_path / "x")

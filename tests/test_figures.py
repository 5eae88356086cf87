"""Figures: each plot runs on small labelled inputs, draws, labels its axes; save_figure is atomic."""
from __future__ import annotations

import io

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import leaves_list, linkage

from retcodec.errors import ConfigurationError, ShapeError
from retcodec.report.figures import (combination_labels, mode_names, plot_contribution_heatmap,
                                     plot_fit_quality, plot_interneuron_matches, plot_irf_filters,
                                     plot_mode_cell_matrix, plot_modes, plot_sparsity, save_figure,
                                     type_colors)

RNG = np.random.default_rng(0)
N_TIME = 200
TIME = np.arange(N_TIME) * 0.01


def _render(fig: Figure) -> Figure:
    """Draw the figure (layout, legends, colour bars) at low resolution; fails on drawing errors."""
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    return fig


def _images(ax):
    return ax.get_images()


def _overlaps(texts) -> list[tuple[str, str]]:
    """Pairs of drawn, non-empty texts whose boxes overlap (figure must be rendered)."""
    boxes = [(t.get_text(), t.get_window_extent()) for t in texts if t.get_visible() and t.get_text()]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
            if box_a.overlaps(box_b)]


def _tick_overlaps(fig: Figure) -> list[tuple[str, str]]:
    """Overlapping tick labels on any axis of ``fig``."""
    return [pair for ax in fig.axes for labels in (ax.get_xticklabels(), ax.get_yticklabels())
            for pair in _overlaps(labels)]


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
    assert len(panels) == 4 and len(fig.axes) == 7          # C+ and C- share one colour bar
    titles = [ax.get_title(loc="left") for ax in panels]
    assert "positive" in titles[0] and "negative" in titles[1] and titles[0].startswith("conv1")
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
    assert not _tick_overlaps(fig)


def test_contribution_heatmap_groups_cells_by_type_and_never_overlaps_labels(contrib_node):
    n_cells, n_modes = 40, 16
    types = np.array(["on", "off", "on_off"])[np.arange(n_cells) % 3]
    many = xr.DataArray(RNG.gamma(2.0, 5.0, (N_TIME, n_cells)), dims=("time", "cell"),
                        coords={"time": TIME, "cell": np.arange(n_cells)})
    modes = xr.DataArray(RNG.random((N_TIME, n_modes)), dims=("time", "mode"),
                         coords={"time": TIME, "mode": np.arange(n_modes)})
    fig = _render(plot_contribution_heatmap(contrib_node, many, modes, cell_types=types, target="surprisal"))
    rate_ax = next(ax for ax in fig.axes if ax.get_title(loc="left") == "model firing rates")
    labels = [t.get_text() for t in rate_ax.get_yticklabels()]
    assert labels == ["off (13)", "on (14)", "on off (13)"]            # one label per type, with counts
    order = np.argsort(types, kind="stable")
    np.testing.assert_array_equal(_images(rate_ax)[0].get_array(), many.values[:, order].T)
    assert "contribution to surprisal (dimensionless)" in {ax.get_ylabel() for ax in fig.axes}
    mode_ax = next(ax for ax in fig.axes if ax.get_ylabel() == "mode")
    assert len(mode_ax.get_yticklabels()) == n_modes                   # 16 modes: every one named
    assert not _tick_overlaps(fig)
    # without types, 40 cells get thinned labels that do not overlap either
    fig = _render(plot_contribution_heatmap(contrib_node, many))
    rate_ax = next(ax for ax in fig.axes if ax.get_ylabel() == "cell")
    assert 2 <= len(rate_ax.get_yticklabels()) < n_cells
    assert not _tick_overlaps(fig)
    with pytest.raises(ShapeError, match="one value per cell"):
        plot_contribution_heatmap(contrib_node, many, cell_types=types[:3])


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
    assert [legend.get_title().get_text() for legend in fig.legends] == ["true type"]
    cluster_strip = next(ax for ax in fig.axes if [t.get_text() for t in ax.get_xticklabels()] == ["cluster"])
    runs = 1 + int(np.sum(np.diff(labels[order]) != 0))
    assert len(cluster_strip.texts) == runs                              # every run named in place
    assert {t.get_text() for t in cluster_strip.texts} == {"0", "1", "2"}
    type_strip = next(ax for ax in fig.axes if [t.get_text() for t in ax.get_xticklabels()] == ["true type"])
    colors = type_colors(types)
    strip_colors = type_strip.get_images()[0].cmap.colors
    assert [tuple(c) for c in strip_colors] == [tuple(colors[t]) for t in ("off", "on")]
    # without a linkage the rows are grouped by cluster label
    fig = _render(plot_mode_cell_matrix(corr, labels[::-1]))
    assert len(fig.axes) == 3
    with pytest.raises(ShapeError, match="one value per cell"):
        plot_mode_cell_matrix(corr, labels[:5])
    with pytest.raises(ShapeError, match="linkage"):
        plot_mode_cell_matrix(corr, labels, tree[:-1])
    with pytest.raises(ShapeError, match="missing \\['mode'\\]"):
        plot_mode_cell_matrix(corr.rename(mode="component"))


def _modes(n_modes=5, n_channels=8, neg=True):
    values = np.zeros((n_modes, n_channels, 2))
    for m in range(n_modes):
        values[m, m % n_channels, 1] = 2.0 - 0.1 * m                     # C+ of channel m
        values[m, (m + 3) % n_channels, 1] = 0.5                        # a smaller C+ term
        if neg:
            values[m, (m + 1) % n_channels, 0] = -0.2                   # a little C- (stored <= 0)
    return xr.DataArray(values, dims=("mode", "channel", "sign"),
                        coords={"mode": np.arange(n_modes), "channel": np.arange(n_channels),
                                "sign": ["neg", "pos"]})


def test_mode_names_list_the_main_channels():
    modes = _modes(3)
    assert mode_names(modes) == ["ch0+", "ch1+", "ch2+"]                 # 93 % of the energy in one term
    assert mode_names(modes, share=0.99)[0] == "ch0+ ch3+"
    assert mode_names(modes, share=1.0)[0] == "ch0+ ch3+ ch1\u2212"
    assert mode_names(modes, share=1.0, max_terms=1)[0] == "ch0+"
    signed = xr.DataArray([[1.5, -2.0, 0.0], [0.0, 0.0, 0.0]], dims=("mode", "channel"),
                          coords={"channel": [4, 5, 6]})
    assert mode_names(signed) == ["ch5\u2212 ch4+", "empty"]
    named = modes.assign_coords(name=("mode", ["a", "b", "c"]))
    assert mode_names(named) == ["a", "b", "c"]


def test_modes_one_heat_map_named_rows_and_one_screen_for_16_modes():
    modes = _modes(16)
    energy = xr.DataArray(np.linspace(0.3, 0.01, 16), dims="mode")
    fig = _render(plot_modes(modes, layer="conv0", energy=energy, relative=False))
    heat = next(ax for ax in fig.axes if _images(ax))
    matrix = _images(heat)[0].get_array()
    assert matrix.shape == (16, 16)                                      # mode x (channel, sign)
    columns = [t.get_text() for t in heat.get_xticklabels()]
    assert columns[:4] == ["0+", "0\u2212", "1+", "1\u2212"]
    np.testing.assert_allclose(matrix[:, 0], modes.sel(sign="pos", channel=0).values)
    np.testing.assert_allclose(matrix[:, 1], modes.sel(sign="neg", channel=0).values)    # C- <= 0: blue
    assert (matrix[:, 1::2] <= 0).all() and matrix[0, 3] == pytest.approx(-0.2)    # mode 0: ch1 C-
    magnitudes = modes.copy(data=np.abs(modes.values))                 # |C-| given: still drawn blue
    heat_abs = next(ax for ax in _render(plot_modes(magnitudes, relative=False)).axes if _images(ax))
    np.testing.assert_allclose(_images(heat_abs)[0].get_array(), matrix)
    rows = [t.get_text() for t in heat.get_yticklabels()]
    assert rows[0] == "0: ch0+" and len(rows) == 16
    bars = next(ax for ax in fig.axes if ax.patches)
    np.testing.assert_allclose(sorted(p.get_width() for p in bars.patches), np.sort(energy.values * 100))
    with pytest.raises(ShapeError, match="one value per mode"):
        plot_modes(modes, energy=[0.5, 0.5])
    assert fig.get_size_inches()[1] <= 6.0                               # one screen at report width
    assert "conv0" in fig._suptitle.get_text() and not fig.legends
    assert any(t.get_text() == "2.0" for t in heat.texts)                # weights written in the cells
    assert not _tick_overlaps(fig)
    # relative (default): every row scaled to its largest |weight|, proportions kept
    heat_rel = next(ax for ax in _render(plot_modes(modes)).axes if _images(ax))
    relative = _images(heat_rel)[0].get_array()
    np.testing.assert_allclose(np.abs(relative).max(axis=1), 1.0)
    np.testing.assert_allclose(relative * np.abs(matrix).max(axis=1, keepdims=True), matrix)


def test_modes_leave_out_columns_without_weight_and_plot_activation_modes():
    fig = _render(plot_modes(_modes(8, neg=False)))
    heat = next(ax for ax in fig.axes if _images(ax))
    assert [t.get_text() for t in heat.get_xticklabels()] == [f"{c}+" for c in range(8)]
    assert "not shown" in heat.get_xlabel() and "C\u2212" in heat.get_xlabel()
    assert _images(heat)[0].norm.vmin == 0                               # one-sided: sequential map
    few = next(ax for ax in _render(plot_modes(_modes(4, neg=False))).axes if _images(ax))
    assert [t.get_text() for t in few.get_xticklabels()] == [f"{c}+" for c in range(8)]   # unused ch7+ stays
    activation = xr.DataArray(RNG.normal(size=(20, 8)), dims=("mode", "channel"))
    fig = _render(plot_modes(activation, max_modes=6))
    heat = next(ax for ax in fig.axes if _images(ax))
    assert _images(heat)[0].get_array().shape == (6, 8)
    assert "first 6 of 20" in fig._suptitle.get_text()
    with pytest.raises(ShapeError, match="missing \\['channel'\\]"):
        plot_modes(activation.rename(channel="unit"))
    with pytest.raises(ConfigurationError, match="max_modes"):
        plot_modes(activation, max_modes=0)


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
    line_axes = [ax for ax in fig.axes if ax.get_xlabel() == "lag before the response (s)" or
                 ax.get_ylabel() == "weight"]
    assert len(image_axes) == 6 and len(line_axes) == 3
    norm = _images(image_axes[0])[0].norm
    assert norm.vmin == -norm.vmax == pytest.approx(-np.abs(spatial.values).max())
    np.testing.assert_allclose(line_axes[0].get_lines()[0].get_xdata(), lag)
    assert line_axes[-1].get_xlabel() == "lag before the response (s)"
    assert _images(image_axes[0])[0].get_extent() == [14.5, 24.5, 29.5, 19.5]      # stimulus pixels
    assert any("stimulus px" in ax.get_xlabel() for ax in fig.axes)                 # the colour bar
    fig = _render(plot_irf_filters(spatial.isel(cell=0, drop=True), temporal))
    assert len([ax for ax in fig.axes if _images(ax)]) == 3
    with pytest.raises(ShapeError, match="same combinations"):
        plot_irf_filters(spatial, temporal.isel(combination=[0, 1]))
    with pytest.raises(ShapeError, match="missing \\['lag'\\]"):
        plot_irf_filters(spatial, temporal.rename(lag="delay"))


def _irf_inputs(n_cells=8, size=50):
    """Gaussian receptive fields of radius ~2 px at known centres; odd cells silent in combination '0+1'."""
    combos = ["0", "0+1", "2"]
    yy, xx = np.mgrid[:size, :size]
    centres = [(10 + 4 * c, 30 - 2 * c) for c in range(n_cells)]
    maps = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0) for cy, cx in centres])
    spatial = np.repeat(maps[None], len(combos), axis=0) * np.array([1, -1, 1])[:, None, None, None]
    spatial[1, 1::2] = np.nan
    temporal = np.repeat(np.sin(np.arange(40) / 6.0)[None, None], len(combos), axis=0).repeat(n_cells, 1)
    temporal[1, 1::2] = np.nan
    coords = {"combination": combos, "cell": np.arange(n_cells)}
    return (xr.DataArray(spatial, dims=("combination", "cell", "y", "x"),
                         coords={**coords, "y": np.arange(size), "x": np.arange(size)}),
            xr.DataArray(temporal, dims=("combination", "cell", "lag"),
                         coords={**coords, "lag": np.arange(1, 41) * 0.01}),
            centres)


def test_irf_filters_one_column_per_type_cropped_named_and_consistent():
    spatial, temporal, centres = _irf_inputs()
    types = np.array(["on", "off"] * 4)
    modes = _modes(3)
    fig = _render(plot_irf_filters(spatial, temporal, modes=modes, cell_types=types, layer="conv1"))
    map_axes = [ax for ax in fig.axes if ax.get_aspect() == 1.0 and not ax.get_ylabel()]
    assert len(map_axes) == 3 * 2                                  # 3 combinations x (one cell per type)
    titles = [ax.get_title() for ax in map_axes[:2]]
    assert titles == ["off\ncell 1", "on\ncell 0"]                  # per type (sorted): its first cell
    # crops: one size for all maps, each centred on its cell's receptive field
    widths = {round(ax.get_xlim()[1] - ax.get_xlim()[0], 6) for ax in map_axes}
    assert len(widths) == 1 and widths.pop() < 20                  # not the whole 50 px map
    for ax, cell in zip(map_axes[:2], (1, 0)):
        cy, cx = centres[cell]
        (x0, x1), (y1, y0) = ax.get_xlim(), ax.get_ylim()
        assert x0 < cx < x1 and y0 < cy < y1
    # the silent cell says so, its temporal filter is not drawn; the others are, in type colours
    assert [t.get_text() for t in map_axes[2].texts] == ["cell\nsilent"]
    line_axes = [ax for ax in fig.axes if ax.get_ylabel() == "weight"]
    colors = type_colors(types)
    assert [len(ax.get_lines()) - 1 for ax in line_axes] == [2, 1, 2]   # minus the zero line
    assert line_axes[0].get_lines()[0].get_color() == colors["off"]
    headers = [sub._suptitle.get_text() for sub in fig.subfigs[:-1]]
    assert headers == ["mode 0 (ch0+) alone", "mode 0 (ch0+) + mode 1 (ch1+)", "mode 2 (ch2+) alone"]
    assert fig._suptitle.get_text().startswith("conv1")
    # without types: cells are picked so that every combination shows a firing cell
    spatial[2, :2] = np.nan                                        # cells 0 and 1 silent in '2' too
    fig = _render(plot_irf_filters(spatial, temporal, max_cells=2))
    map_axes = [ax for ax in fig.axes if ax.get_aspect() == 1.0 and not ax.get_ylabel()]
    assert [ax.get_title() for ax in map_axes[:2]] == ["cell 2", "cell 4"]     # cover all, then most data
    rows = np.array([not ax.texts for ax in map_axes]).reshape(3, 2)
    assert rows.any(axis=1).all()                                  # a firing cell in every combination


def test_combination_labels_name_modes_and_shorten_long_sets():
    modes = _modes(8)
    labels = combination_labels(["3", "1+2", "0+1+2+3+4+5+6+7", "any"], modes, max_listed=3)
    assert labels[0] == "mode 3 (ch3+) alone"
    assert labels[1] == "mode 1 (ch1+) + mode 2 (ch2+)"
    assert labels[2] == "8 modes together (0, 1, 2, …): channels " + " ".join(f"ch{c}+" for c in range(8))
    assert labels[3] == "mode any alone"
    assert combination_labels(["1+2"]) == ["2 modes together (1, 2)"]


# --------------------------------------------------------------------------- interneurons
def test_interneuron_matches_summary_and_best_maps():
    match = _match_dataset()
    fig = _render(plot_interneuron_matches(match, n_maps=3))
    assert len(fig.axes) == 1 + 3 + 1
    summary = fig.axes[0]
    assert summary.get_ylabel() == "Pearson r with best unit"
    labels = [t.get_text() for t in summary.get_xticklabels()]
    assert labels[:4] == ["4", "5", "0", "1"]                        # amacrine first, then by r
    blocks = sorted(t.get_text() for t in summary.texts if "\n" in t.get_text())
    assert blocks == ["amacrine\n(file)", "bipolar\n(file)"]          # each block names its recording
    legend = [t.get_text() for t in summary.get_legend().get_texts()]
    assert {"on", "off", "unknown", "in-sample (biased)"} <= set(legend)
    assert any(text.startswith("p < 0.05") for text in legend)
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
                             "feve": ("cell", np.linspace(0.4, 0.9, n)),
                             "reliable": ("cell", np.arange(n) > 0)},
                            coords={"cell": np.arange(n), "cell_type": ("cell", ["on", "off"] * 4)})
    fig = _render(plot_fit_quality(evaluation))
    ax, = fig.axes
    identity = ax.get_lines()[0]
    np.testing.assert_allclose(identity.get_xdata(), identity.get_ydata())
    assert ax.get_xlabel().startswith("oracle correlation") and ax.get_ylabel().startswith("model correlation")
    points = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    assert points.shape == (n, 2)
    np.testing.assert_allclose(sorted(points[:, 0]), evaluation.oracle.values)
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"on (4)", "off (4)", "unreliable cell"} <= legend
    markers = {c.get_paths()[0].vertices.shape for c in ax.collections if len(c.get_offsets())}
    assert len(markers) == 2                                            # a marker shape per type
    assert "0.59" in ax.get_title() and "0.76" in ax.get_title()        # medians over reliable cells
    assert not ax.texts                                                 # no outliers: no labels
    lo, hi = ax.get_xlim()
    assert lo > 0.2 and hi < 1.1                                        # zoomed to the data
    fig = _render(plot_fit_quality(evaluation, x="feve"))
    assert fig.axes[0].get_xlabel().startswith("FEVE")
    # with a noise ceiling (measured against the trial average, like the model's r) it is the default x
    ceiling = evaluation.assign(ceiling=("cell", np.linspace(0.6, 0.98, n)),
                                normalized_correlation=("cell", np.linspace(0.3, 0.8, n) / np.linspace(0.6, 0.98, n)))
    ax = _render(plot_fit_quality(ceiling)).axes[0]
    assert ax.get_xlabel().startswith("noise ceiling")
    np.testing.assert_allclose(sorted(np.concatenate([c.get_offsets() for c in ax.collections
                                                      if len(c.get_offsets())])[:, 0]), ceiling.ceiling.values)
    assert "normalised correlation (r / ceiling) 0.72" in ax.get_title()
    with pytest.raises(ConfigurationError, match="oracle"):
        plot_fit_quality(evaluation.drop_vars("oracle"))
    with pytest.raises(ShapeError, match="correlation must have dims"):
        plot_fit_quality(evaluation.assign(correlation=(("cell", "rep"), np.ones((n, 2)))))


def test_fit_quality_labels_only_outliers_without_overlap():
    n = 30
    oracle = np.linspace(0.6, 0.9, n)
    correlation = oracle - 0.05 + RNG.normal(0, 0.005, n)
    correlation[[4, 5, 17]] -= [0.3, 0.31, 0.25]                        # three badly fitted cells
    evaluation = xr.Dataset({"correlation": ("cell", correlation), "oracle": ("cell", oracle)},
                            coords={"cell": np.arange(100, 100 + n),
                                    "cell_type": ("cell", np.array(["a", "b", "c"])[np.arange(n) % 3])})
    fig = _render(plot_fit_quality(evaluation))
    texts = fig.axes[0].texts
    labelled = {t.get_text() for t in texts}
    assert "cell 117" in labelled and len(labelled & {"cell 104", "cell 105"}) == 1   # neighbours: one label
    assert labelled <= {"cell 104", "cell 105", "cell 117"}
    assert not _overlaps(texts)
    assert not _render(plot_fit_quality(evaluation, label_cells=False)).axes[0].texts
    # a whole type offset from the others is not an outlier
    shifted = evaluation.assign(correlation=evaluation.correlation - 0.2 * (evaluation.cell_type == "a"))
    shifted["correlation"][[4, 5, 17]] = oracle[[4, 5, 17]] - 0.05
    assert not _render(plot_fit_quality(shifted)).axes[0].texts


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

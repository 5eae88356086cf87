"""Paper figures of a CODEC analysis, drawn from retcodec's labelled xarray outputs.

Every ``plot_*`` function takes xarray objects with named dimensions, checks
them, and returns a :class:`matplotlib.figure.Figure`. Axes are labelled in
physical units (time and lag in s, space in stimulus pixels, rates in Hz).
Figures are built with the object-oriented API (``Figure``), never with
``pyplot``: no global state, no GUI backend, nothing is shown. Write them with
:func:`save_figure` (PNG and SVG, atomically).

Figures are sized for a report about 900-1100 px wide (7 in at 200 dpi shown
at ~150 px per inch): tick labels are thinned or grouped so they never
overlap, each cell type keeps one colour in every figure (:func:`type_colors`)
and modes are named by their main channels (:func:`mode_names`, e.g.
``ch5+ ch1+``: the positive contributions of channels 5 and 1).

Bad input (a missing dimension or variable, mismatched lengths) raises
:class:`~retcodec.errors.ShapeError` or
:class:`~retcodec.errors.ConfigurationError` with a message that names what is
missing.

The figures are drawn in modules by group (:mod:`~retcodec.report.fig_contributions`,
:mod:`~retcodec.report.fig_modes`, :mod:`~retcodec.report.fig_cells`,
:mod:`~retcodec.report.fig_irfs`, :mod:`~retcodec.report.fig_interneurons`,
:mod:`~retcodec.report.fig_stats`, :mod:`~retcodec.report.fig_trends`,
:mod:`~retcodec.report.fig_ablation`, :mod:`~retcodec.report.fig_stimulus`,
:mod:`~retcodec.report.fig_agreement`, :mod:`~retcodec.report.fig_mei`,
:mod:`~retcodec.report.fig_ensemble`) on the shared style and helpers of
:mod:`~retcodec.report.figstyle`; this module is their public face and
re-exports every plotting function, helper and constant listed in ``__all__``.
"""
from __future__ import annotations

from retcodec.report.fig_ablation import plot_ablation_curves
from retcodec.report.fig_agreement import plot_layer_agreement
from retcodec.report.fig_cells import plot_mode_cell_matrix
from retcodec.report.fig_contributions import plot_contribution_heatmap
from retcodec.report.fig_ensemble import plot_ensemble_predictions
from retcodec.report.fig_interneurons import plot_interneuron_matches
from retcodec.report.fig_mei import plot_meis
from retcodec.report.fig_irfs import combination_labels, plot_irf_filters
from retcodec.report.fig_modes import plot_mode_sweep, plot_modes
from retcodec.report.fig_stats import METRIC_LABELS, TYPE_MARKERS, plot_fit_quality, plot_sparsity
from retcodec.report.fig_stimulus import plot_stimulus_view
from retcodec.report.fig_trends import plot_layer_trends
from retcodec.report.fig_types import plot_cell_types
from retcodec.report.figstyle import (DIVERGING, DT, FULL_WIDTH, SIGN_COLORS, SIGN_GLYPHS, mode_names,
                                      save_figure, type_colors)

__all__ = ["save_figure", "plot_contribution_heatmap", "plot_mode_cell_matrix", "plot_modes", "plot_mode_sweep",
           "plot_irf_filters", "plot_interneuron_matches", "plot_sparsity", "plot_fit_quality",
           "plot_layer_trends", "plot_ablation_curves", "plot_stimulus_view", "plot_layer_agreement", "plot_meis", "plot_cell_types",
           "plot_ensemble_predictions", "mode_names", "combination_labels", "type_colors",
           "DT", "SIGN_COLORS", "DIVERGING", "FULL_WIDTH", "SIGN_GLYPHS", "METRIC_LABELS", "TYPE_MARKERS"]

"""Modes of contributions: estimators, the per-layer labelled interface, stability, planted problems."""
from retcodec.modes.estimators import (ContributionModes, ModesBase, NMFModes, PCAModes,
                                       estimator_from_dataset, explained_r2)
from retcodec.modes.layer import fit_layer, layer_matrix, load_modes, modes_dataset, save_modes
from retcodec.modes.stability import match_modes, mode_stability, stability_score
from retcodec.modes.synthetic import make_combinatorial_modes, make_sparse_modes

__all__ = ["ContributionModes", "NMFModes", "PCAModes", "ModesBase", "estimator_from_dataset",
           "explained_r2", "fit_layer", "layer_matrix", "load_modes", "modes_dataset",
           "save_modes", "match_modes", "mode_stability", "stability_score", "make_sparse_modes",
           "make_combinatorial_modes"]

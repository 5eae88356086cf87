"""CODEC for image classifiers (``docs/method.md`` §12): any torch classifier, any image set.

:func:`load_classifier` wraps a network (hidden layers by dotted module name);
:func:`as_image_set` reads arrays, DataLoaders or ``class/*.jpg`` folder trees;
:mod:`.analysis` computes per-image contributions, modes, mode–class
correlations, ablation/preservation controls, input maps and statistics;
:func:`run_study` does it all and writes a results folder with a report.
:class:`Normalization` is part of a model's description (ImageNet mean/std by
default); :mod:`.imagenet` loads EfficientNet-Lite0 with its ImageNet weights
(optional extra ``retcodec[imagenet]``).
"""
from .adapter import ClassifierAdapter, load_classifier, load_weights, module_names
from .analysis import (DEFAULT_FRACTIONS, channel_order, classifier_statistics, control_curves,
                       control_experiments, fit_modes, image_contributions, input_maps,
                       load_superclasses, mode_class_correlation, predict)
from .images import (DEFAULT_NORMALIZATION, NORMALIZATIONS, ArrayImages, FolderImages, ImageSet,
                     Normalization, as_image_set, from_loader, preprocess_image)
from .imagenet import efficientnet_lite0, imagenet_class_names, offline_photographs
from .study import run_study

__all__ = ["ClassifierAdapter", "load_classifier", "load_weights", "module_names", "ImageSet", "ArrayImages",
           "FolderImages", "as_image_set", "from_loader", "image_contributions", "fit_modes",
           "mode_class_correlation", "load_superclasses", "channel_order", "predict",
           "control_curves", "control_experiments", "input_maps", "classifier_statistics",
           "DEFAULT_FRACTIONS", "run_study", "Normalization", "NORMALIZATIONS", "DEFAULT_NORMALIZATION",
           "preprocess_image", "efficientnet_lite0", "imagenet_class_names", "offline_photographs"]

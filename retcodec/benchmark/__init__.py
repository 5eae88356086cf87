"""The benchmark of ground-truth retinas (``retcodec benchmark``): a family of in-silico
retinas (:mod:`retcodec.insilico.family`), each simulated, fitted and analysed by
``retcodec run``, every scientific output scored against the circuit's truth.

* :mod:`.splits` -- the tuning / test split of retina seeds (fixed here and in the docs);
* :mod:`.recipe` -- the fitting recipe of the family (and its quick variant);
* :mod:`.scores` -- scores of one analysed retina (``method x metric``);
* :mod:`.runner` -- generate, fit, run and score retinas, resumably, serially or on dask;
* :mod:`.summary` -- ``benchmark.nc`` over retinas, intervals, figures and the summary page.
"""
from retcodec.benchmark.splits import SPLITS, retina_seeds
from retcodec.benchmark.runner import benchmark, run_retina
from retcodec.benchmark.scores import score_retina
from retcodec.benchmark.summary import summarize

__all__ = ["SPLITS", "retina_seeds", "benchmark", "run_retina", "score_retina", "summarize"]

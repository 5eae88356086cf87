"""One command from a model and a recording to results: ``retcodec run``.

Stages, each writing one output into the results folder (atomically, with the run's
parameters, the retcodec version and the input files' checksums in its attributes):

================  ====================  ==================================================
stage             output                what
================  ====================  ==================================================
contributions     ``contributions.nc``  IG contributions to the surprisal target per layer
modes             ``modes.nc``          sparse contribution modes (and activation modes)
types             ``cell_types.nc``     cells clustered by the modes that drive them
irfs              ``irfs.nc``           IRF summaries per mode combination
interneurons      ``interneurons.nc``   model units vs interneuron recordings
experiments       ``experiments.nc``    silencing modes' channels and matched interneurons
statistics        ``statistics.nc``     sparsity, E/I correlation, dimensionality, fit
figures           ``figures/*.png|svg`` the figures of this run
report            ``report.html``       self-contained report with generated hypotheses
================  ====================  ==================================================

The results folder is locked while a run uses it (a second run is refused at once,
naming the first). A rerun reuses every stage whose recorded outputs are current (same
parameters and inputs, files unchanged since written: checked by sha256) and says so;
a stage that changed is recomputed with everything downstream. An interrupted
contribution stage resumes from its finished chunks.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from retcodec.io.locking import hold_lock
from retcodec.io.storage import check_output_folder
from retcodec.pipeline.config import make_config, resolve_inputs
from retcodec.pipeline.stages import (Run, stage_contributions, stage_experiments, stage_figures, stage_interneurons,
                                      stage_irfs, stage_modes, stage_report, stage_statistics,
                                      stage_types)

__all__ = ["run", "LOCK_NAME"]

#: the lock file inside a results folder
LOCK_NAME = ".retcodec.lock"


def run(model: str | Path | None = None, data: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Analyse a model and its recording end to end (the bundled default when none is given).

    Options are the fields of :class:`retcodec.pipeline.config.RunConfig` (``out``,
    ``layers``, ``steps``, ``method``, ``device``, ``random_state``, ``workers``,
    ``interneurons``, ``max_windows``, ``quick``, ``force``, ``progress``, ...).
    Returns a summary dict with the output paths, per-stage times (the original compute
    time for reused stages) and the log.
    """
    options.setdefault("progress", True)
    cfg = make_config(model, data, **options)
    out = check_output_folder(cfg.out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with hold_lock(out / LOCK_NAME, f"results folder {out}"):
            inputs = resolve_inputs(cfg)
            r = Run(cfg, inputs)
            results: dict[str, Any] = {}
            results["contributions"] = stage_contributions(r)
            results["modes"] = stage_modes(r, results["contributions"])
            results["types"] = stage_types(r, results["contributions"], results["modes"])
            results["irfs"] = stage_irfs(r, results["contributions"], results["modes"])
            results["interneurons"] = stage_interneurons(r)
            results["experiments"] = stage_experiments(r, results["contributions"], results["modes"],
                                                       results["interneurons"])
            results["statistics"] = stage_statistics(r, results["contributions"])
            results["figures"] = stage_figures(r, results["contributions"], results["modes"], results["types"],
                                               results["irfs"], results["interneurons"], results["statistics"],
                                               results["experiments"])
            report = stage_report(r, results)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)      # leave no empty folder behind
        raise
    total = sum(r.timings.values())
    r.say(f"done; stages took {total:.0f} s in all; report: {report}")
    return {"out": str(r.out), "report": str(report), "timings": r.timings, "log": r.log}

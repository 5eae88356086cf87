"""Train a small openretina core-readout model on retcodec's bundled in-silico retina.

Writes ``models/openretina_insilico.ckpt`` (a Lightning checkpoint, as openretina saves
them) with openretina's own data loaders, model class and training loop, run on CPU:

1. the bundled recording ``datasets/insilico/naturalscene.h5`` is put into the layout
   openretina's ``maheswaranathan_2023`` loader reads,
   ``<root>/ganglion_cell_data/insilico/naturalscene.h5`` (retcodec's recording layout
   is that published layout, so this is a copy);
2. openretina's ``load_all_stimuli`` / ``load_all_responses`` (``firing_rate_10ms``),
   ``multiple_movies_dataloaders`` and ``compute_data_info`` prepare the data;
3. a ``UnifiedCoreReadout`` (``SimpleCoreWrapper`` core of two space-time separable
   convolutions, 8 channels each, temporal kernels 21 and 20 frames = a 40-frame
   receptive field like the Baccus CNNs, spatial kernels 7 and 5 on the stimulus
   averaged over 2x2 pixels (openretina's ``downsample_input_kernel_size``), which keeps
   CPU training to minutes; ``MultiGaussianMaskReadout``) is fitted with Lightning for a
   few epochs and saved with ``trainer.save_checkpoint``.

Needs ``pip install "retcodec[openretina]"`` (then ``pip uninstall -y torchvision`` if
the index's torchvision does not match the installed torch). About 3 CPU minutes::

    python tools/make_openretina_model.py --out models/openretina_insilico.ckpt
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recording", type=Path, default=REPO / "datasets/insilico/naturalscene.h5")
    parser.add_argument("--work", type=Path, default=Path("work/openretina_insilico"))
    parser.add_argument("--out", type=Path, default=REPO / "models/openretina_insilico.ckpt")
    parser.add_argument("--session", default="insilico")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batches-per-epoch", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import lightning
    import torch
    import torch.utils.data as data
    from omegaconf import OmegaConf

    from openretina.data_io.base import compute_data_info
    from openretina.data_io.base_dataloader import multiple_movies_dataloaders
    from openretina.data_io.cyclers import LongCycler, ShortCycler
    from openretina.data_io.maheswaranathan_2023.responses import load_all_responses
    from openretina.data_io.maheswaranathan_2023.stimuli import load_all_stimuli
    from openretina.models.core_readout import UnifiedCoreReadout

    from retcodec.io.openretina import published_tree

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    root = published_tree({args.session: [args.recording]}, args.work / "data")
    stim_type = args.recording.stem
    movies = load_all_stimuli(root, stim_type=stim_type, normalize_stimuli=True)
    responses = load_all_responses(root, response_type="firing_rate_10ms", stim_type=stim_type)
    loaders = multiple_movies_dataloaders(responses, movies, train_chunk_size=100, batch_size=8,
                                          seed=args.seed, clip_length=100, num_val_clips=20)
    data_info = compute_data_info(responses, movies, partial_data_info={"stim_type": stim_type,
                                                                       "response_type": "firing_rate_10ms"})
    lightning.pytorch.seed_everything(args.seed)
    core = OmegaConf.create({
        "_target_": "openretina.modules.core.base_core.SimpleCoreWrapper",
        "channels": [1, 8, 8], "temporal_kernel_sizes": [21, 20], "spatial_kernel_sizes": [7, 5],
        "downsample_input_kernel_size": [1, 2, 2],
        "gamma_input": 0.0, "gamma_temporal": 0.0, "gamma_in_sparse": 0.0, "gamma_hidden": 0.0,
        "cut_first_n_frames": 0, "input_padding": False, "hidden_padding": False,
        "convolution_type": "separable"})
    readout = OmegaConf.create({
        "_target_": "openretina.modules.readout.multi_readout.MultiGaussianMaskReadout",
        "scale": True, "bias": True, "gaussian_mean_scale": 6.0, "gaussian_var_scale": 4.0,
        "positive": True, "mask_l1_reg": 0.0, "feature_weights_l1_reg": 0.0})
    model = UnifiedCoreReadout(in_shape=(1, 40, 50, 50), n_neurons_dict=data_info["n_neurons_dict"],
                               core=core, readout=readout, learning_rate=0.01, data_info=data_info,
                               lr_scheduler=OmegaConf.create({
                                   "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "mode": "max",
                                   "factor": 0.3, "patience": 2, "monitor": "val_evaluation_loss"}))
    trainer = lightning.Trainer(max_epochs=args.epochs, limit_train_batches=args.batches_per_epoch,
                                accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, deterministic=True)
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=data.DataLoader(LongCycler(loaders["train"], shuffle=True),
                                                         batch_size=None, num_workers=0),
                val_dataloaders=ShortCycler(loaders["validation"]))
    seconds = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(args.out, weights_only=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(json.dumps({"out": str(args.out), "bytes": args.out.stat().st_size, "train_seconds": round(seconds, 1),
                      "metrics": metrics}, indent=2))


if __name__ == "__main__":
    main()

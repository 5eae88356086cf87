"""CODEC classifier study on scikit-learn's digits: a small CNN and a small ResNet.

Trains both networks in seconds on the 1,797 8x8 digits (upsampled to 16x16),
runs :func:`retcodec.classifier.run_study` on each (IG with 10 steps, top-1
logit, modes with θ = 0.9 and K = 3 × channels on contributions and on
activations, mode–class correlation, ablation/preservation controls, input
maps, statistics) and prints the headline comparison of contribution modes
against activation modes.

    python analyses/classifier_digits.py --out results_digits
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retcodec.classifier import ArrayImages, load_classifier, run_study


def digits_images(size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """z-scored digits ``(1797, 1, size, size)`` float32 and labels ``(1797,)``."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images[:, None] / 16.0).float()
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    return x.numpy(), d.target.astype(np.int64)


def small_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


class Block(nn.Module):
    """``relu(x + conv(relu(bn(conv(x)))))`` with a strided 1x1 shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = (nn.Identity() if stride == 1 and c_in == c_out else
                      nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))
        self.out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.out(h + self.short(x))


class SmallResNet(nn.Module):
    """Stem + 3 residual blocks (16, 32, 32 channels) + global average pool + linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = Block(16, 16)
        self.layer2 = Block(16, 32, stride=2)
        self.layer3 = Block(32, 32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(h.mean(dim=(2, 3)))


def train(net: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> float:
    """Adam, mini-batches of 64; returns the training accuracy."""
    torch.manual_seed(seed)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(net(X[idx]), Y[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return float((net(X).argmax(1) == Y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results_digits"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--mode-epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = digits_images(16)
    mapping = {str(k): ("round" if k in (0, 6, 8, 9) else "straight" if k in (1, 4, 7) else "mixed")
               for k in range(10)}
    (args.out).mkdir(parents=True, exist_ok=True)
    (args.out / "superclasses.json").write_text(json.dumps(mapping))
    models = {"cnn": (small_cnn(), ["1", "4"]), "resnet": (SmallResNet(), ["layer1", "layer2", "layer3"])}
    results = {}
    for name, (net, layers) in models.items():
        t0 = time.perf_counter()
        acc = train(net, x, y, args.epochs)
        model = load_classifier(net, layers)
        summary = run_study(model, ArrayImages(x, y), args.out / name, superclasses=mapping,
                            max_epochs=args.mode_epochs)
        results[name] = summary
        print(f"\n== {name}: training accuracy {acc:.3f}, IG completeness error (total, 10 steps) "
              f"{summary['completeness_error']:.3f}, {time.perf_counter() - t0:.0f} s")
        print(f"{'layer':>8} {'modes':>13} {'n':>3} {'best r':>7} {'abl spec':>9} {'abl>0':>6} {'pres spec':>9}")
        for layer, by_source in summary["layers"].items():
            for source, h in by_source.items():
                print(f"{layer:>8} {source:>13} {h['n_modes']:>3} {h['best_class_correlation']:7.3f} "
                      f"{h['ablation_specificity']:9.3f} {h['positive_ablation_share']:6.2f} "
                      f"{h['preservation_specificity']:9.3f}")
        for row in summary["statistics"]:
            print(f"{row['layer']:>8} Hoyer contribution {row['contribution_sparsity_mean']:.3f} vs "
                  f"activation {row['activation_sparsity_mean']:.3f}; E/I r {row['pos_neg_correlation_mean']:.3f}; "
                  f"class-avg dim {row['class_dimensionality']} (activations {row['class_dimensionality_activation']})")
    (args.out / "headline.json").write_text(json.dumps(results, indent=1))
    print(f"\nreports: {', '.join(str(args.out / n / 'report.html') for n in results)}")


if __name__ == "__main__":
    main()

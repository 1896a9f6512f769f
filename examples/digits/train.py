"""Train the digits CNN and MLP and write the checkpoints that the digits example compiles.

    python examples/digits/train.py [--out DIR] [--epochs N] [--seed S]

Writes into DIR (default: this folder):
  cnn.pt2, mlp.pt2    torch.export programs with a dynamic batch dimension (`torch.export.load`);
  cnn.pt, mlp.pt      state dicts (`torch.load(path, weights_only=True)` into `models.cnn()` / `models.mlp()`);
  train.npz, test.npz the data splits (`x` float32 (N, 1, 8, 8), `y` int64);
  metrics.json        the ANN accuracies.
Training is seeded and deterministic; each model takes a few seconds on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# A script, not a module: run as `python train.py`, this folder is first on sys.path, which is what
# makes these two imports find the sibling files (and not some other `models`).
import data
import models
import torch
from torch import nn

HERE = Path(__file__).resolve().parent

BATCH_SIZE = 64
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-4
DEFAULT_EPOCHS = 40
# Not 0 or 1: export would specialise those sizes instead of keeping the batch symbolic.
EXPORT_EXAMPLE_BATCH = 4


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    """Train ``model`` in place with Adam and cross-entropy on (x, y); return it in eval mode."""
    shuffle = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=shuffle)
        for start in range(0, len(x), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
        scheduler.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of samples whose argmax logit is the label."""
    return (model(x).argmax(dim=1) == y).float().mean().item()


@torch.no_grad()
def zero_subnormals(model: nn.Module) -> int:
    """Set every subnormal float32 in the parameters and buffers to 0; return how many were changed.

    Subnormals are slow on CPUs and flushed to zero by GPUs and fixed-point targets, so leaving them in
    would make backends disagree in the last bit for no benefit.
    """
    tiny = torch.finfo(torch.float32).tiny
    changed = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.dtype == torch.float32:
            subnormal = (tensor != 0) & (tensor.abs() < tiny)
            changed += int(subnormal.sum())
            tensor[subnormal] = 0.0
    return changed


def export(model: nn.Module, example: torch.Tensor, path: Path) -> torch.export.ExportedProgram:
    """Export ``model`` with a symbolic batch dimension, save it to ``path`` and return the program."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return program


@torch.no_grad()
def check_export(path: Path, model: nn.Module, x: torch.Tensor) -> float:
    """Reload the program at ``path``, run it on ``x`` and return its max abs difference to ``model``."""
    reloaded = torch.export.load(path).module()
    return (reloaded(x) - model(x)).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs per model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the init and the shuffling")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")

    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    data.save_npz_splits(args.out, seed=args.seed)
    x_train, y_train, x_test, y_test = map(torch.from_numpy, data.load_digits_splits(seed=args.seed))

    metrics: dict[str, object] = {"seed": args.seed, "epochs": args.epochs, "test_samples": len(x_test)}
    for name, factory in models.ARCHITECTURES.items():
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        model = train(factory(), x_train, y_train, args.epochs, args.seed)
        seconds = time.perf_counter() - start
        zeroed = zero_subnormals(model)
        torch.save(model.state_dict(), args.out / f"{name}.pt")
        export(model, x_test[:EXPORT_EXAMPLE_BATCH], args.out / f"{name}.pt2")
        export_diff = check_export(args.out / f"{name}.pt2", model, x_test)
        test_acc = accuracy(model, x_test, y_test)
        metrics[name] = {
            "test_accuracy": round(test_acc, 6),
            "train_accuracy": round(accuracy(model, x_train, y_train), 6),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        print(
            f"{name}: test accuracy {test_acc:.4f}, trained in {seconds:.1f} s, "
            f"{zeroed} subnormal weights zeroed, export max abs diff {export_diff:.2e}"
        )
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

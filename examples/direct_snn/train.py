"""Train the direct-coded SNNs of models.py on the digits with surrogate gradients, for T = 4 and 8.

    python examples/direct_snn/train.py [--out DIR] [--epochs N] [--seed S] [--only NAME] [--timesteps 4,8]

Each model is trained with its own library (its surrogate gradient, its way of running over time):
Adam, cosine schedule, batch 64; cross-entropy on the mean output over the T steps, except the
SpikingJelly MLP, whose output is spikes: mean-squared error between its firing rates and the one-hot
label, as SpikingJelly's tutorial trains it.  Writes into DIR (default: this folder):
  NAME_tT.pt     state dicts: ``model = models.NAME(); model.load_state_dict(torch.load(p, weights_only=True))``
  metrics.json   per model: T, epochs, training seconds, train and test accuracy as its library runs it
Seeded and deterministic (one thread, torch.use_deterministic_algorithms); a few CPU minutes in all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
# A script: this folder is first on sys.path (models); the digits data lives next door.
sys.path.insert(1, str(HERE.parent / "digits"))

import data  # noqa: E402
import models  # noqa: E402

BATCH_SIZE = 64
LEARNING_RATE = 2e-3
DEFAULT_EPOCHS = 25
DEFAULT_TIMESTEPS = (4, 8)
SPIKE_OUTPUT = {"spikingjelly_mlp"}  # read as firing rates: trained with MSE to the one-hot label


def loss_fn(name: str, mean_output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name in SPIKE_OUTPUT:
        return nn.functional.mse_loss(mean_output, nn.functional.one_hot(y, models.NUM_CLASSES).float())
    return nn.functional.cross_entropy(mean_output, y)


def train(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timesteps: int, epochs: int,
          seed: int) -> nn.Module:
    """Train ``model`` in place over ``timesteps`` direct-coded steps; return it in eval mode."""
    shuffle = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=shuffle)
        for start in range(0, len(x), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss_fn(name, models.logits(name, model, x[batch], timesteps), y[batch]).backward()
            optimizer.step()
        scheduler.step()
    return model.eval()


@torch.no_grad()
def accuracy(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, timesteps: int) -> float:
    """Fraction of samples whose argmax of the mean output over T steps is the label."""
    return (models.logits(name, model, x, timesteps).argmax(dim=1) == y).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=sorted(models.ARCHITECTURES), action="append")
    parser.add_argument("--timesteps", default=",".join(map(str, DEFAULT_TIMESTEPS)))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_train, y_train, x_test, y_test = (torch.as_tensor(a) for a in data.load_digits_splits(args.seed))
    args.out.mkdir(parents=True, exist_ok=True)
    metrics_path = args.out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    for name in args.only or models.ARCHITECTURES:
        for timesteps in (int(t) for t in args.timesteps.split(",")):
            torch.manual_seed(args.seed)
            model = models.ARCHITECTURES[name][0]()
            start = time.perf_counter()
            train(name, model, x_train, y_train, timesteps, args.epochs, args.seed)
            seconds = time.perf_counter() - start
            key = f"{name}_t{timesteps}"
            torch.save(model.state_dict(), args.out / f"{key}.pt")
            metrics[key] = {
                "architecture": name,
                "timesteps": timesteps,
                "epochs": args.epochs,
                "train_seconds": round(seconds, 1),
                "train_accuracy": accuracy(name, model, x_train, y_train, timesteps),
                "test_accuracy": accuracy(name, model, x_test, y_test, timesteps),
            }
            print(f"{key:22s} test {metrics[key]['test_accuracy']:.4f}  ({seconds:.0f} s)", flush=True)
    metrics_path.write_text(json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The two ANNs of the digits example, as factories that `snnc compile --arch models.py:NAME` can call.

Both take images of shape (N, 1, 8, 8) with values in [0, 1] and return 10 logits.
The CNN holds the layers that conversion must handle on a real model: BatchNorm after each conv
(folded by `fold-bn`), max pooling (gated spike max pooling after conversion) and average pooling.
"""

from __future__ import annotations

from torch import nn

NUM_CLASSES = 10


def cnn() -> nn.Sequential:
    """Conv-BN-ReLU-MaxPool, Conv-BN-ReLU-AvgPool, Linear: 8x8 -> 4x4 -> 2x2, 6 186 parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, NUM_CLASSES),
    )


def mlp() -> nn.Sequential:
    """Flatten, 64 -> 128 -> 64 -> 10 with ReLU and Dropout (identity in eval mode); 17 226 parameters."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, NUM_CLASSES),
    )


# The architectures by name: what train.py trains and what tests load.
ARCHITECTURES = {"cnn": cnn, "mlp": mlp}

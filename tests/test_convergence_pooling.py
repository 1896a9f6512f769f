"""A max pooling of a max pooling behind a neuron (GoogLeNet's inception branch 4 pools the output
of the stem's last max pooling) converts with ``ann-to-snn`` and converges to its clipped ANN.

Before the fix, lower-neurons refused it (``maxpool2d %... reads %..., not the output of an
activation``): the first pooling was already a ``spike_count_maxpool`` and was not recognised as a
source of spikes.  Max of max is the max over the union of the windows, also on net counts.
"""

from __future__ import annotations

import numpy as np
import torch
from conversion_util import SIM, context, run
from torch import nn

from snnc.frontend.fx import import_module
from snnc.ir import ops as O
from snnc.passes.pipelines import ANN_TO_SNN


class _Inception(nn.Module):
    """conv → ReLU → conv → ReLU → max pool, then two branches: 1x1 conv, and max pool (3, 1, 1) of
    the pooled value → 1x1 conv (GoogLeNet's branch 4); concat, average pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1),
                                  nn.ReLU(), nn.MaxPool2d(2))
        self.branch1 = nn.Sequential(nn.Conv2d(12, 8, 1), nn.ReLU())
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(12, 8, 1), nn.ReLU())
        self.head = nn.Linear(16, 5)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / m.weight[0].numel()) ** 0.5)
                    if m.bias is not None:
                        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = torch.cat([self.branch1(y), self.branch4(y)], dim=1)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)))


def test_pooling_of_pooling_converts_and_converges() -> None:
    model = _Inception().eval()
    rng = np.random.default_rng(5)
    calib = rng.uniform(0, 1, (32, 3, 12, 12)).astype(np.float32)
    x = rng.uniform(0, 1, (4, 3, 12, 12)).astype(np.float32)
    g = import_module(model, torch.as_tensor(x[:1]))
    snn = run(ANN_TO_SNN.replace(",count-ops", ""), g, context(calib, timesteps=128, batch_size=32))
    pools = [n for n in snn.nodes if isinstance(n.op, O.SpikeCountMaxPool2d)]
    assert len(pools) == 2 and pools[1].inputs[0] == pools[0].name, [(n.name, n.inputs) for n in pools]
    ann = SIM.run_ann(snn, x)[snn.outputs[0]]
    with torch.no_grad():  # ANN mode clips at the calibrated thresholds: close to the model, not equal
        assert _cosine(ann, model(torch.as_tensor(x)).numpy()) > 0.99
    runs = SIM.run_snn_steps(snn, x, (8, 32, 128))
    curve = [_cosine(runs[t].logits, ann) for t in (8, 32, 128)]
    assert curve[-1] >= 0.99 and curve[1] >= curve[0] - 0.01 and curve[2] >= curve[1] - 0.01, curve

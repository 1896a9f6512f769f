"""Helpers of the direct-to-event tests (tests/test_pass_d2e_*.py).

A small direct-coded SNN written in IR (encode{direct} · flatten · linear · LIF with hard reset ·
linear · readout), trained on the digits with surrogate gradients through the torch simulator, as a
snnTorch user would train it; cached per T so that the test files share one training.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from conversion_util import SIM, digits_split

from snnc.ir import Graph, GraphAttributes, Node, analog
from snnc.ir import ops as O
from snnc.pass_manager import CalibrationData, PassContext

HIDDEN = 48
LIF = O.Neuron(model=O.NeuronModel.LIF, beta=0.9, reset=O.Reset.HARD)


def direct_mlp(seed: int = 0, hidden: int = HIDDEN) -> Graph:
    """A direct-coded LIF MLP 64 -> hidden -> 10 with He-initialised weights (untrained)."""
    rng = np.random.default_rng(seed)
    params = {
        "fc1.weight": rng.standard_normal((hidden, 64)) * math.sqrt(2 / 64),
        "fc1.bias": np.zeros(hidden),
        "fc2.weight": rng.standard_normal((10, hidden)) * math.sqrt(2 / hidden),
        "fc2.bias": np.zeros(10),
    }
    nodes = [
        Node("enc", O.Encode(), ("x",)),
        Node("flat", O.Flatten(), ("enc",)),
        Node("fc1", O.Linear(), ("flat",), params={"weight": "fc1.weight", "bias": "fc1.bias"}),
        Node("lif1", LIF, ("fc1",)),
        Node("fc2", O.Linear(), ("lif1",), params={"weight": "fc2.weight", "bias": "fc2.bias"}),
        Node("out", O.Readout(), ("fc2",)),
    ]
    g = Graph(
        "direct_mlp",
        [("x", analog(1, 8, 8))],
        nodes=nodes,
        outputs=["out"],
        attrs=GraphAttributes(0),
        params={k: np.asarray(v, dtype=np.float32) for k, v in params.items()},
    )
    g.infer_types()
    return g


def train_direct(
    graph: Graph, x: np.ndarray, y: np.ndarray, timesteps: int, epochs: int, seed: int = 0
) -> Graph:
    """Surrogate-gradient training with direct coding (Adam 3e-3, batch 64); returns a trained copy."""
    g = graph.copy()
    keys = [k for k in g.params if k.endswith(("weight", "bias"))]
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = SIM.trainable(g, keys)
        opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=3e-3)
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x), 64):
                idx = order[start : start + 64]
                logits, _ = SIM.surrogate_run(module, x[idx], timesteps)
                loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
        g.params.update(SIM.read_params(module, keys))
    return g


@functools.lru_cache(maxsize=4)
def trained_mlp(timesteps: int = 4) -> Graph:
    """The direct-coded MLP trained for 8 epochs on the digits train split at T (about 1 s)."""
    x, y = digits_split("train")
    return train_direct(direct_mlp(), x, y, timesteps, epochs=8)


def digits_context(timesteps: int, labelled: bool = True, n: int | None = None) -> PassContext:
    x, y = digits_split("train")
    if n is not None:
        x, y = x[:n], y[:n]
    calibration = CalibrationData(x, y if labelled else None)
    return PassContext(calibration=calibration, simulator=SIM, timesteps=timesteps)


def accuracy(graph: Graph, split: str = "test", timesteps: int | None = None) -> float:
    x, y = digits_split(split)
    run = SIM.run_snn(graph, x, timesteps or graph.attrs.timesteps)
    return float((run.predictions == y).mean())


def first_layer_counts(
    graph: Graph, x: np.ndarray, timesteps: int, layer: str = "fc1"
) -> tuple[float, float]:
    """(MACs, SOPs) per sample of ``layer`` over T steps."""
    run = SIM.run_snn(graph, x, timesteps)
    return run.macs.get(layer, 0.0), run.sops.get(layer, 0.0)

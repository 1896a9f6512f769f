"""Small graphs NIR can express (hard reset, strict threshold; a residual add, sum pooling, a scale,
a 1-D convolution), with seeded parameters: the NIR round-trip tests and the NIR fuzzer's seeds."""

from __future__ import annotations

import numpy as np

from snnc.ir import Graph, Node, analog
from snnc.ir import ops as O


def neuron(beta: float, **kw) -> O.Neuron:
    """A NIR-expressible neuron: IF for beta = 1, else LIF; hard reset, v > v_th."""
    model = O.NeuronModel.IF if beta == 1.0 else O.NeuronModel.LIF
    return O.Neuron(model=model, reset=O.Reset.HARD, strict=True, beta=beta, **kw)


def nir_graphs(rng: np.random.Generator) -> list[Graph]:
    """conv (conv2d, sum pooling, flatten, residual add of two linears), mlp (linear, scale) and
    conv1 (conv1d), typed."""
    conv = Graph("conv", [("x", analog(2, 8, 8))])
    conv.params = {
        "c.w": rng.normal(0, 0.6, (4, 2, 3, 3)).astype(np.float32),
        "c.b": rng.normal(0, 0.1, 4).astype(np.float32),
        "n1.v_th": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "l.w": rng.normal(0, 0.4, (5, 64)).astype(np.float32),
        "l.b": rng.normal(0, 0.1, 5).astype(np.float32),
        "r.w": rng.normal(0, 0.4, (5, 64)).astype(np.float32),
    }
    conv.nodes = [
        Node("enc", O.Encode(), ("x",)),
        Node("c", O.Conv2d(padding=(1, 1)), ("enc",), params={"weight": "c.w", "bias": "c.b"}),
        Node("n1", neuron(1.0), ("c",), params={"v_th": "n1.v_th"}),
        Node("p", O.SumPool2d(), ("n1",)),
        Node("f", O.Flatten(), ("p",)),
        Node("l", O.Linear(), ("f",), params={"weight": "l.w", "bias": "l.b"}),
        Node("skip", O.Linear(), ("f",), params={"weight": "r.w"}),
        Node("sum", O.Add(), ("l", "skip")),
        Node("n2", neuron(0.8, v_th=0.7), ("sum",)),
        Node("ro", O.Readout(), ("n2",)),
    ]
    conv.outputs = ["ro"]
    mlp = Graph("mlp", [("x", analog(6))])
    mlp.params = {
        "a.w": rng.normal(0, 0.5, (8, 6)).astype(np.float32),
        "a.b": rng.normal(0, 0.1, 8).astype(np.float32),
        "s.scale": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "b.w": rng.normal(0, 0.5, (3, 8)).astype(np.float32),
    }
    mlp.nodes = [
        Node("a", O.Linear(), ("x",), params={"weight": "a.w", "bias": "a.b"}),
        Node("s", O.Scale(factor=2.0), ("a",), params={"scale": "s.scale"}),
        Node("n", neuron(0.9, v_th=0.5), ("s",)),
        Node("b", O.Linear(), ("n",), params={"weight": "b.w"}),
        Node("m", neuron(1.0), ("b",)),
    ]
    mlp.outputs = ["m"]
    conv1 = Graph("conv1", [("x", analog(2, 10))])
    conv1.params = {"k.w": rng.normal(0, 0.5, (3, 2, 3)).astype(np.float32), "k.b": np.zeros(3, np.float32)}
    conv1.nodes = [
        Node("k", O.Conv1d(), ("x",), params={"weight": "k.w", "bias": "k.b"}),
        Node("n", neuron(1.0), ("k",)),
        Node("f", O.Flatten(), ("n",)),
    ]
    conv1.outputs = ["f"]
    for g in (conv, mlp, conv1):
        g.infer_types()
    return [conv, mlp, conv1]

"""Helpers shared by the conversion-pass tests (tests/test_pass_*.py, test_conversion_theory.py).

Small graphs from textual IR with seeded parameters, pass contexts over in-memory calibration
data, and the digits example (trained CNN / MLP and their splits).
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np

from snnc.backends.torch.simulator import TorchSimulator
from snnc.frontend.files import load_model
from snnc.ir import Graph, parse_graph
from snnc.ir import ops as O
from snnc.pass_manager import CalibrationData, PassContext, PassManager
from snnc.passes.calibrate import Calibration

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"
SIM = TorchSimulator(batch_size=512)


def ir(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def graph_from_text(text: str, seed: int = 0, params: dict[str, np.ndarray] | None = None) -> Graph:
    """Parse ``text``; every parameter not in ``params`` gets a seeded random array of the shape its
    op needs (convs have 3-wide kernels unless given; weights at He's scale, biases N(0, 0.1²))."""
    g = parse_graph(ir(text))
    rng = np.random.default_rng(seed)
    given = params or {}
    for node in g.nodes:
        out = node.type.shape
        for role, key in node.params.items():
            if key in given:
                g.params[key] = np.asarray(given[key], dtype=np.float32)
                continue
            if role == "weight" and isinstance(node.op, (O.Conv2d, O.Conv1d)):
                cin = g.value_type(node.inputs[0]).shape[0]
                kernel = (3, 3) if isinstance(node.op, O.Conv2d) else (3,)
                shape: tuple[int, ...] = (out[0], cin // node.op.groups, *kernel)
                fan_in = int(np.prod(shape[1:]))
                g.params[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
            elif role == "weight" and isinstance(node.op, O.Linear):
                shape = (out[0], g.value_type(node.inputs[0]).shape[0])
                g.params[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / shape[1])).astype(np.float32)
            elif role == "bias":
                g.params[key] = (0.1 * rng.standard_normal(out[0])).astype(np.float32)
            else:
                g.params[key] = rng.uniform(0.5, 1.5, out[0]).astype(np.float32)
    return g


def context(x: np.ndarray, y: np.ndarray | None = None, timesteps: int = 8, batch_size: int = 64) -> PassContext:
    return PassContext(
        calibration=CalibrationData(np.asarray(x, dtype=np.float32), y, batch_size=batch_size),
        simulator=SIM,
        timesteps=timesteps,
    )


def run(pipeline: str, graph: Graph, ctx: PassContext) -> Graph:
    return PassManager.parse(pipeline).run(graph, ctx)


def uniform_inputs(shape: tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *shape)).astype(np.float32)


def digits_model(arch: str) -> Graph:
    return load_model(DIGITS / f"{arch}.pt2").graph


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(DIGITS / f"{split}.npz") as f:
        return f["x"], f["y"]


def power_of_two_thresholds(graph: Graph) -> None:
    """Round every calibrated threshold to a power of two: then rescaling by thresholds is exact
    in floating point, and a scale-folding pass must reproduce the SNN bit for bit."""
    stats = graph.analyses.get(Calibration).stats
    for name, s in stats.items():
        rounded = 2.0 ** np.round(np.log2(s.threshold))
        stats[name] = dataclasses.replace(s, threshold=rounded)


def logits(graph: Graph, x: np.ndarray, timesteps: int) -> np.ndarray:
    return SIM.run_snn(graph, x, timesteps).logits


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))

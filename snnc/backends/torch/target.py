"""The torch target: the artifact is the IR itself, run by the reference simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from snnc.backends.torch.simulator import TorchSimulator
from snnc.ir import Graph
from snnc.pass_manager import PassContext
from snnc.targets import TargetOptions


class TorchTarget:
    def __init__(self, name: str = "torch", options: TargetOptions | None = None):
        self.name = name
        self.options = options or TargetOptions()

    def pipeline_suffix(self) -> str:
        return ""

    def legality(self, graph: Graph) -> list[str]:
        return []  # the simulator runs every op of the IR

    def compile(self, graph: Graph, out_dir: Path, ctx: PassContext) -> dict[str, Any]:
        return {"simulator": "snnc.backends.torch", "device": ctx.device}

    def run(self, artifact: Path, graph: Graph, x: np.ndarray, timesteps: int, device: str) -> dict[str, np.ndarray]:
        res = TorchSimulator(device).run_snn(graph, x, timesteps)
        return {"logits": res.logits, "predictions": res.predictions, "steps_used": res.steps_used}

"""The torch target: the artifact is the IR itself, run by the reference simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from snnc.ir import Graph
from snnc.pass_manager import PassContext
from snnc.targets import TargetOptions


class TorchTarget:
    description = "reference simulator (PyTorch), CPU or GPU"

    def __init__(self, name: str = "torch", options: TargetOptions | None = None):
        self.name = name
        self.options = options or TargetOptions()

    def pipeline_suffix(self) -> str:
        return ""

    def legality(self, graph: Graph) -> list[str]:
        return []  # the simulator runs every op of the IR

    def compile(self, graph: Graph, out_dir: Path, ctx: PassContext) -> dict[str, Any]:
        return {"simulator": "snnc.backends.torch", "device": ctx.device}

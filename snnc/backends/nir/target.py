"""The nir target: writes ``model.nir`` (NIR HDF5) for snnTorch, Norse, Lava-dl, Rockpool,
Sinabs, SpiNNaker2 and others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from snnc.errors import TargetError, UserError
from snnc.formats.nir import DT, legality, to_nir
from snnc.ir import Graph
from snnc.ir import ops as O
from snnc.pass_manager import PassContext
from snnc.targets import TargetOptions


class NIRTarget:
    def __init__(self, name: str = "nir", options: TargetOptions | None = None):
        self.name = name
        self.options = options or TargetOptions()

    def pipeline_suffix(self) -> str:
        return ""

    def default_pipeline(self, graph: Graph, has_calibration: bool) -> str | None:
        """snn-to-nir for a spiking source (its neurons as they are, with or without data); ann-to-nir for
        an ANN with calibration data; None (the driver's analysis-only default) otherwise."""
        if any(isinstance(n.op, O.Neuron) for n in graph.nodes):
            return "snn-to-nir"
        return "ann-to-nir" if has_calibration else None

    def legality(self, graph: Graph) -> list[str]:
        return legality(graph)

    def compile(self, graph: Graph, out_dir: Path, ctx: PassContext) -> dict[str, Any]:
        try:
            import nir
        except ModuleNotFoundError:
            raise TargetError("the nir target needs the 'nir' package (pip install 'snnc[nir]')") from None
        nir_graph = to_nir(graph)
        nir.write(str(out_dir / "model.nir"), nir_graph)
        return {"file": "model.nir", "nodes": len(nir_graph.nodes), "edges": len(nir_graph.edges), "dt": DT,
                "nir_version": nir.__version__}

    def run(self, artifact: Path, graph: Graph, x: np.ndarray, timesteps: int, device: str) -> dict[str, np.ndarray]:
        raise UserError("the nir target writes model.nir for other tools (snnTorch, Norse, ...) and runs nothing "
                        "itself; run the artifact's IR with --backend torch")

"""The nir target: writes ``model.nir`` (NIR HDF5) for snnTorch, Norse, Lava-dl, Rockpool,
Sinabs, SpiNNaker2 and others; ``snnc run --backend nir`` runs that file in Norse (docs/nir.md)."""

from __future__ import annotations

import logging
import warnings
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
        """nir-legalize after a user's pipeline (the default ones run it already): a hard-reset network
        with max pooling then exports as the ann-to-nir one does."""
        return "nir-legalize"

    def default_pipeline(self, graph: Graph, has_calibration: bool) -> str | None:
        """snn-to-nir for a spiking source (its neurons as they are, with or without data); ann-to-nir for
        an ANN with calibration data; None (the driver's analysis-only default) otherwise."""
        if any(isinstance(n.op, O.Neuron) for n in graph.nodes):
            return "snn-to-nir"
        return "ann-to-nir" if has_calibration else None

    def import_legality(self, graph: Graph) -> list[str]:
        from snnc.passes._refusals import product_refusal

        return product_refusal(graph, "NIR has no elementwise product of two values (its graphs sum the inputs "
                                      "of a node)")

    def legality(self, graph: Graph) -> list[str]:
        return legality(graph)

    def compile(self, graph: Graph, out_dir: Path, ctx: PassContext) -> dict[str, Any]:
        try:
            import nir
        except ModuleNotFoundError:
            raise TargetError("the nir target needs the 'nir' package (pip install 'snnc[nir]')") from None
        nir_graph = to_nir(graph)
        try:
            nir.write(str(out_dir / "model.nir"), nir_graph)
        except OSError as e:
            raise UserError(f"cannot write {out_dir / 'model.nir'}: {e.strerror or e}") from None
        except (TypeError, ValueError) as e:  # h5py refusing a field of the graph: say which package refused
            raise TargetError(f"NIR export: the nir package could not write the graph: {e}") from None
        return {"file": "model.nir", "nodes": len(nir_graph.nodes), "edges": len(nir_graph.edges), "dt": DT,
                "nir_version": nir.__version__,
                # how the libraries measured in docs/nir.md run the file as snnc does
                "load": {"norse": f"norse.torch.from_nir(snnc.formats.nir.for_norse(nir.read(path)), dt={DT})",
                         "snntorch": "snntorch.import_nir.import_from_nir(snnc.formats.nir.for_snntorch(nir.read(path)))"}}

    def run(self, artifact: Path, graph: Graph, x: np.ndarray, timesteps: int, device: str) -> dict[str, np.ndarray]:
        """Run ``model.nir`` as a NIR consumer does: loaded with Norse's importer (``norse.torch.from_nir``,
        after ``for_norse``), stepped ``timesteps`` times on ``x``; the logits are the mean output over the
        steps (snnc's mean-current readout).  A differential check of the file, not of the IR."""
        from snnc.formats.nir import for_norse, read_nir_file

        if not (artifact / "model.nir").is_file():
            raise UserError(f"{artifact}: no model.nir to run; compile with --target nir, or run the artifact's IR "
                            "with --backend torch")
        try:
            with warnings.catch_warnings():  # Norse's import warns about torch.jit.script's deprecation
                warnings.simplefilter("ignore", FutureWarning)
                import norse.torch as norse_torch
            import torch
        except ModuleNotFoundError as e:
            raise UserError(f"running a nir artifact loads model.nir in Norse, which is not installed ({e.name}); "
                            "pip install 'snnc[snn]', or run its IR with --backend torch") from None
        nir_graph = read_nir_file(artifact / "model.nir")
        dt = float(nir_graph.metadata.get("snnc_dt", DT)) if isinstance(nir_graph.metadata, dict) else DT
        logging.disable(logging.WARNING)  # Norse warns that an IF node's r is not 1; it ignores r, as it may
        try:
            module = norse_torch.from_nir(for_norse(nir_graph), dt=dt).to(device)
        finally:
            logging.disable(logging.NOTSET)
        total: Any = 0.0
        state = None
        with torch.no_grad():
            xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
            for _ in range(timesteps):
                out, state = module(xt, state)
                total = total + out
        logits = (total / timesteps).reshape(len(x), -1).cpu().numpy()
        return {"logits": logits, "predictions": logits.argmax(axis=1)}

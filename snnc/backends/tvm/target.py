"""The tvm target: event-driven kernels generated with TVM, and a torch-free runtime.

Artifact: the IR files (graph.snnir, params.safetensors, report.json) plus ``tvm/`` with
``lib.so``, ``graph.json`` and ``params.safetensors`` (format.md), runnable with TVM's
runtime and numpy alone: ``EventRuntime(out / "tvm").run(x, T)``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from snnc.errors import TargetError
from snnc.ir import Graph
from snnc.ir import ops as O
from snnc.pass_manager import PassContext
from snnc.passes.count_ops import OpCounts
from snnc.targets import TargetOptions

SUBDIR = "tvm"


class TVMTarget:
    def __init__(self, name: str = "tvm", options: TargetOptions | None = None):
        self.name = name
        self.options = options or TargetOptions()

    def pipeline_suffix(self) -> str:
        return ""

    def default_pipeline(self, graph: Graph, has_calibration: bool) -> str | None:
        """ann-to-snn-unsigned for an ANN with calibration data (the kernels send 0/1 spikes: no
        negative=signed|rectified neurons yet); None (the driver's default) otherwise."""
        if not has_calibration or any(isinstance(n.op, O.Neuron) for n in graph.nodes):
            return None
        return "ann-to-snn-unsigned"

    def import_legality(self, graph: Graph) -> list[str]:
        from snnc.backends.tvm.lower import import_legality

        return import_legality(graph)

    def legality(self, graph: Graph) -> list[str]:
        from snnc.backends.tvm.legalize import problems as legalized_problems

        problems = legalized_problems(graph)
        return [_grouped(problems)] if problems else []

    def compile(self, graph: Graph, out_dir: Path, ctx: PassContext) -> dict[str, Any]:
        try:
            from snnc.backends.tvm import build
        except ModuleNotFoundError as e:
            raise TargetError(
                f"the tvm target needs apache-tvm ({e.name} is missing): pip install 'snnc[tvm]'"
            ) from None
        from snnc.backends.tvm.layers import Artifact
        from snnc.backends.tvm.legalize import legalize
        from snnc.backends.tvm.lower import input_densities, lower

        graph = graph.copy()  # the driver writes and simulates the graph as the passes left it
        for line in legalize(graph):
            ctx.note(f"tvm: {line}")
        counts = graph.analyses.get(OpCounts)
        densities = input_densities(graph, counts.as_dict() if counts else None, graph.attrs.timesteps)
        from snnc.backends.tvm.passes.tvm_quantize import TvmQuantization

        quantized = graph.analyses.get(TvmQuantization)  # tvm-quantize ran: its layers are int8
        layer_graph, params = lower(graph, densities, int8=quantized.layers if quantized else ())
        device = "cuda" if ctx.device.startswith("cuda") else "llvm"
        t0 = time.perf_counter()
        directory = build.compile_artifact(layer_graph, params, out_dir / SUBDIR, target=device)
        build_s = time.perf_counter() - t0
        # the modes the runtime runs (planning makes a layer that reads analog values dense)
        built = Artifact.read(directory / build.GRAPH)
        weighted = [layer for layer in built.graph.layers if layer.op.weighted]
        modes = {layer.name: layer.mode.value for layer in weighted}  # the batched kernels'
        modes_batch1 = {layer.name: layer.mode_for(1).value for layer in weighted}
        kernels = {name for files in built.files.values() for name in files.any_batch + files.batch1}
        return {
            "artifact": f"{SUBDIR}/",
            "device": device,
            "build_seconds": round(build_s, 3),
            "kernels": len(kernels),
            "layer_modes": modes,
            "layer_modes_batch1": modes_batch1,
            "layer_precisions": {  # weighted layers, and the int8 residual joins and scales
                layer.name: layer.precision.value
                for layer in built.graph.layers
                if layer.op.weighted or layer.precision.value != "float32"
            },
            "input_densities": densities,
        }

    def run(self, artifact: Path, graph: Graph, x: np.ndarray, timesteps: int, device: str) -> dict[str, np.ndarray]:
        return run_tvm_artifact(artifact, x, timesteps)


def run_tvm_artifact(path: Path, x: np.ndarray, timesteps: int) -> dict[str, np.ndarray]:
    from snnc.backends.tvm.runtime import EventRuntime

    directory = Path(path) / SUBDIR
    if not directory.exists():
        raise TargetError(f"{path}: has no tvm/ artifact; compile with --target tvm")
    result = EventRuntime(directory).run(x, timesteps)
    return {"logits": result["logits"], "predictions": result["predictions"]}


_LISTED = 12  # nodes listed per reason; the rest are counted


def _grouped(problems: list[str]) -> str:
    """The problems grouped by reason, the reason once, then one line per node (``op %n: reason``
    problems; a graph-level one stands alone): a real model's refusal reads as a short list."""
    groups: dict[str, list[str]] = {}
    for p in problems:
        where, sep, reason = p.partition(": ")
        if not sep or "%" not in where:
            where, reason = "", p
        groups.setdefault(reason, []).append(where)
    lines = [f"{len(problems)} problem{'s' if len(problems) != 1 else ''}, {len(groups)} "
             f"reason{'s' if len(groups) != 1 else ''}:"]
    for reason, wheres in groups.items():
        named = [w for w in wheres if w]
        lines.append(f"  {reason}" + (f" ({len(named)} node{'s' if len(named) != 1 else ''}):" if named else ""))
        lines += [f"    {w}" for w in named[:_LISTED]]
        if len(named) > _LISTED:
            lines.append(f"    ... and {len(named) - _LISTED} more")
    return "\n".join(lines)

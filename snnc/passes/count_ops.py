"""count-ops: per-layer cost analysis (an analysis: changes nothing in the graph).

Attaches an ``OpCounts`` to ``graph.analyses`` and its dict form to ``ctx.results["count-ops"]``:
``layers: [{name, op, neurons, macs, sops, spikes_per_sample, analog_macs, hoisted_macs}]`` and totals.

* ``macs``: multiply-accumulates of one dense (ANN) evaluation of the layer;
* ``neurons``: elements of each activation (relu/clip/neuron output);
* with spikes in the graph (neurons or phase neurons), calibration data in the context and
  ``samples`` > 0, the graph is simulated on ``samples`` calibration samples drawn with the context's seed
  (:func:`~snnc.passes._samples.sample_rows`: the same ones the compile driver's report uses, which
  then reuses this simulation instead of running its own) for its ``timesteps`` attribute (the
  pipelined length of a phase-coded graph), else ``ctx.timesteps``, steps and each synaptic layer gets ``sops`` (accumulates per
  sample: input events × fan-out, a burst of n counting n), ``analog_macs`` (per sample, over
  all steps: a synaptic layer reading analog values, e.g. a direct-coded first layer, multiplies
  at every step) and ``hoisted_macs`` (the same, with a loop-invariant layer, one that reads
  the direct-coded input with no neuron in between, counted once: docs/energy.md); each neuron
  gets ``spikes_per_sample``.  The simulation runs in units of ``snnc.distributed.UNIT`` samples;
  under torchrun the ranks share them and every rank gets the same merged counts.
* ``mul`` (SEW-ResNet's AND / IAND) has a row with its dense ``macs`` (one multiply per element) and
  no simulated counts: on spikes it is a gate that drives no synapse, left out of SOPs and MACs as
  neuron updates are; what it lets through is counted as events where it is read.  An ``add`` of
  events (SEW's ADD, 0..2 per element) passes the sum on as events, so its readers count a 2 as two
  accumulates per synapse, as they count a burst.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from snnc import distributed
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.ir.ops_phase import PhaseNeuron
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._samples import sample_rows


def dense_macs(graph: Graph, node: Node) -> int:
    """MACs (or adds, for pooling and residual adds) of one dense evaluation of ``node``."""
    op, out = node.op, node.type
    assert out is not None  # verified graphs are typed
    if isinstance(op, (O.Conv2d, O.Conv1d)):
        w = graph.params[node.params["weight"]].shape
        return out.numel * math.prod(w[1:])
    if isinstance(op, O.Linear):
        return math.prod(graph.params[node.params["weight"]].shape)
    if isinstance(op, O.Pool2d):
        return out.numel * op.kernel[0] * op.kernel[1]
    if isinstance(op, O.Add):
        return out.numel * (len(node.inputs) - 1)
    if isinstance(op, (O.Scale, O.Mul)):
        return out.numel
    return 0



def _is_activation(node: Node) -> bool:
    return isinstance(node.op, (O.Relu, O.Clip, O.Neuron, PhaseNeuron))


@dataclass(frozen=True, kw_only=True)
class OpCounts:
    """What count-ops leaves in ``graph.analyses``: one row per layer (name, op, neurons, macs, sops,
    analog_macs, hoisted_macs, spikes_per_sample), their totals, and whether SOPs and spikes were
    simulated (only with calibration data and a spiking graph)."""

    layers: list[dict[str, Any]]
    totals: dict[str, float]
    simulated: bool
    # the simulation behind the counts: the calibration rows it ran on and its predictions there
    # (the driver's report reads the accuracy off them instead of simulating again); not reported
    rows: np.ndarray | None = None
    predictions: np.ndarray | None = None
    steps_used: np.ndarray | None = None
    # how the simulator ran the graph: "layer-major", or "time-major (why)" (GraphModule.run_snn)
    execution: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The report's form (``report.json`` layers / totals, and the simulation's execution order)."""
        out: dict[str, Any] = {"layers": self.layers, "totals": self.totals, "simulated": self.simulated}
        if self.execution:
            out["execution"] = self.execution
        return out


def _is_max_pooling(node) -> bool:
    return isinstance(node.op, O.Pool2d) and not node.op.synaptic  # avg/sum pooling are synaptic


@register_pass
@dataclass(frozen=True)
class CountOps(Pass):
    """Per-layer MACs and neurons; SOPs and spikes once the graph spikes."""

    name: ClassVar[str] = "count-ops"
    analysis: ClassVar[bool] = True
    result: ClassVar[type[OpCounts]] = OpCounts
    # calibration samples simulated for SOPs and spike counts; 0: none (MACs and neurons only).  A
    # compile whose pipeline ends with count-ops, its samples not set, runs it without data and
    # simulates once, on the report's --report-samples sample, for the counts and the accuracy
    samples: int = 256

    def option_problems(self) -> list[str]:
        return [f"samples={self.samples} must be >= 0"] if self.samples < 0 else []

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        layers: list[dict[str, Any]] = []
        for node in graph.nodes:
            if not (node.op.synaptic or _is_activation(node) or _is_max_pooling(node) or isinstance(node.op, O.Mul)):
                continue
            layers.append(
                {
                    "name": node.name,
                    "op": node.op.name,
                    "neurons": node.type.numel if _is_activation(node) and node.type else 0,
                    "macs": dense_macs(graph, node) if node.op.synaptic or isinstance(node.op, O.Mul) else 0,
                    "sops": 0.0,
                    "spikes_per_sample": 0.0,
                    "analog_macs": 0.0,
                    "hoisted_macs": 0.0,
                }
            )
        spiking = any(isinstance(n.op, (O.Neuron, PhaseNeuron)) for n in graph.nodes)
        simulated = False
        rows, result = None, None
        if spiking and self.samples > 0 and ctx.calibration is not None and ctx.simulator is not None:
            timesteps = graph.attrs.timesteps or ctx.timesteps
            rows = sample_rows(len(ctx.calibration.x), self.samples, ctx.seed)
            x = ctx.calibration.x[rows]
            simulator = ctx.simulator
            # in units dealt over the torchrun ranks (one process: all of them), merged in order
            with ctx.track(f"count-ops: simulate {len(rows)} samples", distributed.my_units(len(rows))) as bar:
                parts = distributed.map_units(lambda r: simulator.run_snn(graph, x[r], timesteps), len(rows),
                                              progress=bar)
            result = type(parts[0]).merge(parts)
            for layer in layers:
                layer["sops"] = float(result.sops.get(layer["name"], 0.0))
                layer["analog_macs"] = float(result.macs.get(layer["name"], 0.0))
                layer["hoisted_macs"] = float(result.hoisted_macs.get(layer["name"], 0.0))
                layer["spikes_per_sample"] = float(result.spikes.get(layer["name"], 0.0))
            simulated = True
        totals = {
            key: sum(layer[key] for layer in layers)
            for key in ("neurons", "macs", "sops", "spikes_per_sample", "analog_macs", "hoisted_macs")
        }
        counts = OpCounts(layers=layers, totals=totals, simulated=simulated, rows=rows,
                          predictions=None if result is None else result.predictions,
                          steps_used=None if result is None else result.steps_used,
                          execution=getattr(result, "execution", ""))
        graph.analyses.put(counts)
        ctx.results[self.name] = counts.as_dict()

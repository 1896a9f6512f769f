"""The Loihi target (``--target loihi`` = ``loihi2``, ``loihi1``): what a Loihi user deploys.

``compile`` lowers the quantised graph (:mod:`.lower`), maps it onto cores and chips (the
``loihi-map`` analysis, redone here when it was made for another chip), checks ``--board``
(:class:`~.mapping.DoesNotFitError`, exit status 2, with the cores and chips the model needs), and
writes:

* ``network.net``: the lava-dl netx HDF5 file (:mod:`.netx`), when netx can express the graph (a
  chain of input, conv, dense and flatten layers; a residual add or a concat cannot: the file is then
  skipped with a note); a direct-coded input is sent as graded spikes, which lava-dl takes as a
  loading argument (``input_message_bits``), not in the file;
* ``mapping.json``: every neuron range → chip/core, per-core use of every resource, the layers and
  their depths, the input coding and the readout;
* ``core_utilisation.png``: per-core utilisation of every resource;
* a ``target_report``: cores, chips, synaptic memory, axons, spikes and synaptic operations per
  inference, energy per inference (Davies et al. 2018 Table 2 per-op figures and SANA-FE's silicon
  calibration) and time per timestep, and accuracies: the float SNN with soft and with hard reset,
  the quantised SNN, and the bit-accurate simulation of the chip (:func:`run_net`) on the labelled
  calibration samples.

Timing on the chip.  Every synaptic layer sends at step t what it received at step t-1
(:mod:`.bitacc`), so a layer at synaptic depth d sees the input of step t at step t + d.  The input
is presented for the graph's T steps and the chip runs ``T + D`` steps, D the readout layer's depth:
each layer then receives exactly the T input steps the float SNN gives it.  A neuron's bias is added
from step 0, though, so before its first input a layer at depth d would integrate d steps of bias
alone (on the digits CNN that alone costs 3 points of accuracy).  Each layer is therefore reset at
step d, when its first input arrives: lava's ``LIFReset`` (``reset_interval`` = steps per sample,
one offset per layer, which lava-dl netx sets up for pipelined networks); :func:`simulate_chip` is
``bitacc.simulate`` with that reset.  With it the chip computes exactly what the quantised graph
computes in the torch simulator (integer values in float32), shifted by each layer's depth: the
only differences left are lava's truncation of a leak, the wrap of the 24-bit current and the
saturation of the voltage.  The spikes the bias causes before the reset are real chip activity and
are counted in ``measured``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from snnc.errors import TargetError, UnsupportedError
from snnc.ir import Graph
from snnc.ir import ops as O
from snnc.pass_manager import PassContext
from snnc.targets import TargetOptions

from .bitacc import (
    ACT_SHIFT,
    LayerKind,
    QLayer,
    pool_weight_tensor,
    simulate_with_state,
)
from .calibration_run import simulate_calibration
from .hardware import ChipSpec, CostModel, Resource, load_chip
from .lower import InputCoding, LoihiNet, ReadoutKind, calibrated_rates, lower
from .mapping import Mapping, estimate_cost, map_network, network_from_layers

NETX_FILE = "network.net"
MAPPING_FILE = "mapping.json"
PLOT_FILE = "core_utilisation.png"
ACCURACY_SAMPLES = 512  # labelled calibration samples the bit-accurate simulation runs on
RATE_SAMPLES = 256
_BATCH = 128
DEFAULT_PIPELINE = "ann-to-loihi"  # snnc/backends/loihi/passes/loihi_pipelines.py


class LoihiTarget:
    """``--target loihi`` / ``loihi2`` / ``loihi1``; ``--target-config`` and ``--board`` from the options."""

    def __init__(self, name: str = "loihi", options: TargetOptions | None = None):
        self.name = name
        self.options = options or TargetOptions()
        self.chip_name = "loihi1" if name == "loihi1" else "loihi2"
        self.chip: ChipSpec = load_chip(self.chip_name, self.options.target_config)
        self.board = self.options.board
        if self.board is not None:
            self.chip.board_chips(self.board)  # an unknown board fails now, not after the pipeline

    # -- the pipeline ---------------------------------------------------------------------------
    def _map_options(self) -> dict[str, str]:
        opts = {"chip": self.chip_name}
        config = self.options.target_config
        # a path the pipeline grammar cannot carry is applied by compile() instead
        if config is not None and not re.search(r"[,{}\s]", str(config)):
            opts["config"] = str(config)
        return opts

    def pipeline_suffix(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self._map_options().items())
        return "loihi-legalize,loihi-quantize,loihi-map{" + opts + "}"

    def default_pipeline(self, graph: Graph, has_calibration: bool) -> str | None:
        """ann-to-loihi (with this target's chip in loihi-map) for an ANN with calibration data; None (the
        driver's default) otherwise."""
        if not has_calibration or any(isinstance(n.op, O.Neuron) for n in graph.nodes):
            return None
        from snnc.pass_manager import parse_pipeline, pipeline_string

        passes = [
            dataclasses.replace(p, **self._map_options()) if p.name == "loihi-map" else p  # type: ignore[type-var]
            for p in parse_pipeline(DEFAULT_PIPELINE)
        ]
        return pipeline_string(passes)

    def import_legality(self, graph: Graph) -> list[str]:
        from snnc.passes._refusals import product_refusal

        # no pass turns a 1-D convolution into something Loihi has synapses for, nor removes a product
        return [f"conv1d %{n.name}: Loihi has dense and 2-D convolutional synapses only; not supported by the "
                f"loihi target" for n in graph.ops(O.Conv1d)] + product_refusal(
            graph, "an elementwise product of two spike trains is no synapse: Loihi's CUBA neurons sum their "
                   "weighted inputs, none multiplies two of them")

    def legality(self, graph: Graph) -> list[str]:
        from snnc.passes._refusals import format_refusals

        from .lower import legality

        problems = legality(graph)
        return [format_refusals(self.name, problems, graph)] if problems else []

    # -- compile --------------------------------------------------------------------------------
    def compile(self, graph: Graph, out_dir: Path, ctx: PassContext) -> dict[str, Any]:
        net = lower(graph)
        mapping = self._mapping(graph, net, ctx)
        if self.board is not None:
            mapping.require_fits(self.board)
        bad = mapping.violations()
        if bad:  # the mapper re-counts every core; this would be a bug in it
            raise TargetError(f"the mapping breaks a per-core limit: {bad[0]}")
        T = graph.attrs.timesteps or ctx.timesteps
        steps = T + net.latency
        netx = self._write_netx(net, out_dir / NETX_FILE, steps, ctx)
        lava_script = _write_lava_script(out_dir, net, T, ctx) if netx["written"] else None
        (out_dir / MAPPING_FILE).write_text(json.dumps(_mapping_json(mapping, net, T), indent=1) + "\n")
        from .plots import plot_utilisation

        plot_utilisation(mapping, out_dir / PLOT_FILE)
        report: dict[str, Any] = {
            "chip": self.chip.name,
            "board": self.board,
            "board_chips": self.chip.board_chips(self.board) if self.board else None,
            "fits_board": mapping.fits(self.board) if self.board else None,
            "fits_boards": {b: mapping.fits(b) for b in sorted(self.chip.boards)},
            "files": {"mapping": MAPPING_FILE, "plot": PLOT_FILE, "netx": NETX_FILE if netx["written"] else None,
                      "lava_script": lava_script},
            "netx": netx,
            **_resources(mapping),
            "timesteps": T,
            "latency_steps": net.latency,
            "steps_per_inference": steps,
            "input": net.coding.to_json(),
            "readout": net.readout.kind.value,
            "readout_scale": net.readout.scale.tolist(),
            "activity": "spikes, synaptic operations and energy from the calibrated spike rates (loihi-map)",
        }
        report.update(_costs(mapping, T, steps))
        measured = self._measure(graph, net, ctx, T)
        if measured:
            report["measured"] = measured
        report["accuracy"] = _accuracies(ctx, measured)
        if "loihi-quantize" in ctx.results:
            report["quantisation"] = ctx.results["loihi-quantize"]
        return report

    def run(self, artifact: Path, graph: Graph, x: np.ndarray, timesteps: int, device: str) -> dict[str, np.ndarray]:
        return run_loihi_artifact(artifact, x, timesteps)

    def _mapping(self, graph: Graph, net: LoihiNet, ctx: PassContext) -> Mapping:
        mapping = graph.analyses.get(Mapping)
        if isinstance(mapping, Mapping) and mapping.chip == self.chip:
            return mapping
        if isinstance(mapping, Mapping):
            ctx.note(f"loihi: the loihi-map analysis was made for '{mapping.chip.name}' with other values; "
                     f"re-mapped for {self.chip.name}")
        rates = calibrated_rates(ctx, graph, net, RATE_SAMPLES) or {}
        return map_network(network_from_layers(net.layers, rates), self.chip)

    def _write_netx(self, net: LoihiNet, path: Path, steps: int, ctx: PassContext) -> dict[str, Any]:
        from .netx import write_netx

        # graded input is a loading argument of lava-dl's netx.hdf5.Network, not part of the file
        layers = [replace(net.layers[0], message_bits=0), *net.layers[1:]]
        try:
            write_netx(path, layers, steps)
        except UnsupportedError as e:
            ctx.note(f"loihi: network.net not written: {e}")
            return {"written": False, "reason": str(e)}
        out: dict[str, Any] = {
            "written": True,
            "readout": _readout_text(net),
            "reset": (f"every layer's u and v are zeroed at the step its first input arrives, its depth d in "
                      f"mapping.json (lava LIFReset, reset_interval = {steps}, reset_offset = d + 1 in lava's "
                      "time steps counted from 1): lava-dl netx's Network(..., reset_interval="
                      f"{steps}, reset_offset=1), as run_lava.py loads it (make interop-lava: spike for spike)"),
        }
        if net.coding.message_bits:
            out["input_message_bits"] = net.coding.message_bits
            out["input"] = (f"graded spikes round({net.coding.levels:g} * x) every step for {steps - net.latency} "
                            f"steps, then zeros: {steps} steps per sample (lava-dl: Network(..., "
                            f"input_message_bits={net.coding.message_bits}))")
        return out

    def _measure(self, graph: Graph, net: LoihiNet, ctx: PassContext, T: int) -> dict[str, Any] | None:
        """Spikes, synaptic operations and (labelled data) accuracy of the bit-accurate simulation."""
        if ctx.calibration is None:
            return None
        x = np.asarray(ctx.calibration.x[:ACCURACY_SAMPLES], dtype=np.float32)
        run = run_net(net, x, T)
        out: dict[str, Any] = {
            "samples": int(len(x)),
            "spikes_per_inference": float(sum(run.spikes.values())),
            "synaptic_ops_per_inference": float(sum(run.synops.values())),
            "spikes_per_layer": run.spikes,
            "synaptic_ops_per_layer": run.synops,
        }
        if run.readout_fired:
            ctx.note("loihi: the readout integrator reached its threshold (its voltage saturated); logits are clipped")
        y = ctx.calibration.y
        if y is not None:
            y = np.asarray(y[: len(x)])
            out["bit_accurate_accuracy"] = float((run.predictions == y).mean())
            if ctx.simulator is not None:
                float_run = simulate_calibration(ctx, graph, x, T)  # loihi-map's run when it is the same call
                out["quantised_snn_accuracy"] = float((float_run.predictions == y).mean())
                out["agreement_with_quantised_snn"] = float((float_run.predictions == run.predictions).mean())
        return out


def _write_lava_script(out_dir: Path, net: LoihiNet, T: int, ctx: PassContext) -> str | None:
    """run_lava.py (:mod:`.lava_script`): network.net loaded in Lava as snnc simulated it."""
    from .lava_script import write_run_lava

    try:
        return write_run_lava(out_dir, net, T)
    except UnsupportedError as e:
        ctx.note(f"loihi: run_lava.py not written: {e}")
        return None


def _readout_text(net: LoihiNet) -> str:
    if net.readout.kind is ReadoutKind.VOLTAGE:
        return ("the last layer integrates without firing (vThMant = 2^17 - 1, vDecay = 0): read its voltage v at the "
                "last step; logits = v / 64 * readout_scale / T")
    return "spike counts of the last layer"


# ----------------------------------------------------------------------------------------------------
# report pieces


def _resources(mapping: Mapping) -> dict[str, Any]:
    total = {r: sum(c.usage[r] for c in mapping.cores) for r in Resource}
    bits = total[Resource.SYNAPSE_BITS]
    return {
        "cores": mapping.cores_used,
        "chips": mapping.chips_used,
        "cores_lower_bound": mapping.lower_bound,
        "cores_over_lower_bound": mapping.cores_used / max(mapping.lower_bound, 1),
        "neurons": total[Resource.NEURONS],
        "synaptic_memory_bits": bits,
        "synaptic_memory_bytes": bits // 8,
        "input_axons": total[Resource.INPUT_AXONS],
        "output_axons": total[Resource.OUTPUT_AXONS],
        "mapping_seconds": mapping.seconds,
    }


def _costs(mapping: Mapping, T: int, steps: int) -> dict[str, Any]:
    """Energy per inference and time per step from the calibrated rates: spikes, synaptic operations
    and messages happen during the T steps each layer is driven; every neuron updates every step."""
    neurons = sum(c.usage[Resource.NEURONS] for c in mapping.cores)
    energy, time = {}, {}
    for model in CostModel:
        cost = estimate_cost(mapping, model)
        static = neurons * mapping.chip.energy(model).neuron_update_inactive
        dynamic = float(cost["energy_pj_per_step"]) - static
        energy[model.value] = {
            "energy_pj_per_inference": dynamic * T + static * steps,
            "energy_pj_per_step": float(cost["energy_pj_per_step"]),
            **{k: float(v) for k, v in cost.items() if k.startswith("energy_pj_") and k != "energy_pj_per_step"},
        }
        time[model.value] = {"time_ns_per_step": float(cost["time_ns_per_step"]),
                             "time_us_per_inference": float(cost["time_ns_per_step"]) * steps / 1e3}
        synops, spikes = float(cost["synops_per_step"]), float(cost["spikes_per_step"])
    return {
        "spikes_per_inference": spikes * T,
        "synaptic_ops_per_inference": synops * T,
        "energy": energy,
        "time": time,
        "loihi_pj": energy[CostModel.DAVIES2018.value]["energy_pj_per_inference"],
        "cost_models": {
            CostModel.DAVIES2018.value: "Davies et al., IEEE Micro 2018, Table 2 (pre-silicon, 0.75 V)",
            CostModel.SANAFE.value: "SANA-FE arch/loihi.yaml, calibrated on Loihi silicon (Boyle et al. 2023)",
        },
    }


def _accuracies(ctx: PassContext, measured: dict[str, Any] | None) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    tuned = ctx.results.get("loihi-thresholds", {}).get("accuracy")
    if tuned:
        out.update(soft_reset_snn=tuned["soft_reset"], hard_reset_snn_calibrated_thresholds=
                   tuned["hard_reset_calibrated_thresholds"], hard_reset_snn=tuned["hard_reset"])
        if tuned["soft_reset"] is not None and tuned["hard_reset"] is not None:
            out["hard_reset_cost_points"] = 100.0 * (tuned["soft_reset"] - tuned["hard_reset"])
    quant = ctx.results.get("loihi-quantize", {}).get("accuracy")
    if quant:
        out.update(float_snn=quant["float_snn"], quantised_snn=quant["quantised_snn"])
    if measured and "bit_accurate_accuracy" in measured:
        out["loihi_bit_accurate"] = measured["bit_accurate_accuracy"]
        out["samples"] = measured["samples"]
    if not out:
        return None
    out["split"] = "calibration"
    return out


def _mapping_json(mapping: Mapping, net: LoihiNet, T: int) -> dict[str, Any]:
    depths = net.depths
    layers = [
        {"name": layer.name, "kind": layer.kind.value, "shape": list(layer.shape), "depth": depths[i],
         "neurons": layer.neurons if layer.has_neurons else 0, "source": layer.source}
        for i, layer in enumerate(net.layers)
    ]
    return {
        **mapping.to_json(),
        "layers": layers,
        "input": net.coding.to_json(),
        "readout": {"kind": net.readout.kind.value, "layer": net.layers[net.readout.layer].name},
        "timesteps": T,
        "steps_per_inference": T + net.latency,
    }


# ----------------------------------------------------------------------------------------------------
# running the chip (bit-accurate)


def encode_input(coding: InputCoding, x: np.ndarray, timesteps: int) -> np.ndarray:
    """The input layer's spikes [B, T, *shape] for samples ``x`` [B, *shape] (the host's side)."""
    x = np.asarray(x, dtype=np.float64)
    if coding.scheme is O.Scheme.DIRECT:
        top = (1 << (coding.message_bits - 1)) - 1
        q = np.clip(np.rint(coding.levels * x), -top, top).astype(np.int64)
        return np.repeat(q[:, None], timesteps, axis=1)
    import torch

    xc = torch.as_tensor(np.clip(x, 0.0, 1.0))
    out = np.zeros((len(x), timesteps, *x.shape[1:]), dtype=bool)
    for t in range(timesteps):
        if coding.scheme is O.Scheme.RATE:  # the torch simulator's generator, step by step
            gen = torch.Generator().manual_seed(coding.seed * 100003 + t)
            out[:, t] = (torch.rand(xc.shape, generator=gen, dtype=xc.dtype) < xc).numpy()
        elif coding.scheme is O.Scheme.TTFS:
            t_fire = torch.round((1.0 - xc) * (timesteps - 1))
            out[:, t] = ((t_fire == t) & (xc > 0)).numpy()
        else:
            raise UnsupportedError(f"{coding.scheme.value} input coding does not run on Loihi")
    return out


@dataclass(kw_only=True)
class LoihiRun:
    """What the bit-accurate chip computes on a batch: every layer's output [B, steps, *shape] (only
    for :func:`run_net` ``keep=True``), the readout's voltage at the last step, logits, predictions,
    spikes and synaptic operations per sample and layer."""

    logits: np.ndarray
    predictions: np.ndarray
    voltage: np.ndarray | None
    steps: int
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    spikes: dict[str, float] = field(default_factory=dict)
    synops: dict[str, float] = field(default_factory=dict)
    readout_fired: bool = False


def reset_steps(net: LoihiNet) -> list[int | None]:
    """The step at which each neuron layer's state is zeroed (lava ``LIFReset``): its synaptic depth,
    the step its first input arrives; None for layers without neurons."""
    return [d if layer.has_neurons else None for layer, d in zip(net.layers, net.depths, strict=True)]


def simulate_chip(
    layers: list[QLayer], spikes_in: np.ndarray, steps: int, resets: list[int | None] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The mapped network on the chip: ``bitacc.simulate_with_state`` with each layer's reset step."""
    return simulate_with_state(layers, spikes_in, steps, resets)


def run_net(net: LoihiNet, x: np.ndarray | None, timesteps: int, keep: bool = False,
            spikes_in: np.ndarray | None = None) -> LoihiRun:
    """Run the bit-accurate network on samples ``x`` (or on given input spikes ``spikes_in``
    [B, T, ...]) for ``timesteps`` input steps + the latency, in batches; each layer is reset when
    its first input arrives (:func:`reset_steps`)."""
    n = len(spikes_in) if spikes_in is not None else len(x)  # type: ignore[arg-type]
    parts = []
    for i in range(0, n, _BATCH):
        batch_in = spikes_in[i : i + _BATCH] if spikes_in is not None else None
        batch_x = None if x is None else x[i : i + _BATCH]
        parts.append(_run_batch(net, batch_x, timesteps, keep, batch_in))
    first = parts[0]
    weight = [len(p.logits) / n for p in parts]
    return LoihiRun(
        logits=np.concatenate([p.logits for p in parts]),
        predictions=np.concatenate([p.predictions for p in parts]),
        voltage=None if first.voltage is None else np.concatenate([p.voltage for p in parts]),  # type: ignore[misc]
        steps=first.steps,
        outputs={k: np.concatenate([p.outputs[k] for p in parts]) for k in first.outputs},
        spikes={k: sum(w * p.spikes[k] for w, p in zip(weight, parts, strict=True)) for k in first.spikes},
        synops={k: sum(w * p.synops[k] for w, p in zip(weight, parts, strict=True)) for k in first.synops},
        readout_fired=any(p.readout_fired for p in parts),
    )


def _run_batch(net: LoihiNet, x: np.ndarray | None, timesteps: int, keep: bool, spikes_in: np.ndarray | None
               ) -> LoihiRun:
    if spikes_in is None:
        spikes_in = encode_input(net.coding, x, timesteps)  # type: ignore[arg-type]
    steps = timesteps + net.latency
    out, voltages = simulate_chip(net.layers, spikes_in, steps, reset_steps(net))
    r = net.readout
    layer = net.layers[r.layer]
    voltage = None
    if r.kind is ReadoutKind.VOLTAGE:
        # reset when its first input arrived, the integrator holds exactly the T steps the float model sums
        voltage = voltages[layer.name]
        logits = (voltage // (1 << ACT_SHIFT)).reshape(len(voltage), -1) * r.scale / timesteps
    else:
        # the readout layer's own T steps, the last T (before them a biased population fires unreset)
        logits = out[layer.name][:, -timesteps:].sum(axis=1).reshape(len(spikes_in), -1) * r.scale / timesteps
    spikes, synops = _activity(net, out)
    return LoihiRun(
        logits=logits,
        predictions=logits.argmax(axis=1),
        voltage=voltage,
        steps=steps,
        outputs=out if keep else {},
        spikes=spikes,
        synops=synops,
        readout_fired=r.kind is ReadoutKind.VOLTAGE and bool(out[layer.name].any()),
    )


def _sources(net: LoihiNet, i: int) -> tuple[int, ...]:
    layer = net.layers[i]
    return layer.inputs if layer.inputs else ((i - 1,) if i > 0 else ())


def _activity(net: LoihiNet, out: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    """Spikes per sample of every neuron layer, and synaptic operations per sample of every synaptic
    layer: Σ over steps of (input events × synapses each one drives)."""
    spikes: dict[str, float] = {}
    synops: dict[str, float] = {}
    batch = len(next(iter(out.values())))
    for i, layer in enumerate(net.layers):
        integrator = i == net.readout.layer and net.readout.kind is ReadoutKind.VOLTAGE
        if layer.has_neurons and not integrator:
            spikes[layer.name] = float(out[layer.name].sum()) / batch
        if not layer.has_neurons:
            continue
        total = 0.0
        for group, k in zip((layer, *layer.extra), _sources(net, i), strict=False):
            src = net.layers[k]
            events = (out[src.name] != 0).sum(axis=1)  # [B, *in_shape]: events per input element
            total += float((events * _fanout(group, src.shape)).sum()) / batch
        synops[layer.name] = total
    return spikes, synops


def _fanout(layer: QLayer, in_shape: tuple[int, ...]) -> np.ndarray:
    """Synapses (non-zero weights) each input element of ``layer`` drives, shaped like the input."""
    if layer.kind is LayerKind.DENSE:
        return np.count_nonzero(layer.weight_array, axis=0).reshape(in_shape)
    import torch
    import torch.nn.functional as F

    if layer.kind is LayerKind.POOL:
        w, groups = pool_weight_tensor(in_shape[0], layer.kernel, int(layer.weight_array)), in_shape[0]
    else:
        w, groups = layer.weight_array, layer.groups
    ones = torch.ones((1, *layer.shape), dtype=torch.float64)
    fan = F.conv_transpose2d(ones, torch.as_tensor((w != 0).astype(np.float64)), stride=layer.stride,
                             padding=layer.padding, dilation=layer.dilation, groups=groups)[0]
    _, h, wd = in_shape
    return F.pad(fan, (0, wd - fan.shape[2], 0, h - fan.shape[1])).numpy()


def run_loihi_artifact(path: Path, x: np.ndarray, timesteps: int) -> dict[str, np.ndarray]:
    """``snnc run --backend loihi``: the artifact's graph lowered and run bit-accurately for
    ``timesteps`` input steps (+ the latency)."""
    from snnc.ir import load_graph

    graph = load_graph(Path(path))
    try:
        net = lower(graph)
    except TargetError as e:
        raise TargetError(f"{path}: not a Loihi artifact ({e}); compile with --target loihi") from None
    run = run_net(net, np.asarray(x, dtype=np.float32), int(timesteps))
    return {"logits": run.logits.astype(np.float32), "predictions": run.predictions}

"""An independent reference for the phase-coding ops (snnc/ir/ops_phase.py), to cross-check the simulator.

The torch simulator (snnc/backends/torch/simulator.py) runs a graph step by step, each phase op a small
state machine.  This module computes the same semantics another way, from the op docstrings: each
value is a whole time sequence [T, N, ...], and each phase op maps its operand's sequence to its own
in closed form:

* ``phase_neuron``: x = Σ_k B^(−k)·I[start + k] (I[start] for a constant input) + b; the spike offset
  k* is the number of levels θ·B^(−k)·(1 + 1/B)/2 (k < K) above x, and the neuron fires at
  start + K + k* when k* < K;
* ``phase_maxpool``: the max pool of each step, zeroed where a positive output already passed in the
  same segment [0, start), [start, start + K), … (a cumulative "or" along time);
* ``phase_decode``: total·(B^(−k)·I[t] + [k = 0]·b) inside its window.

``ann_mode`` finds each phase neuron's level from a logarithm in float64 rather than by comparing with
each level as the simulator does.  Every other op is evaluated by the torch backend's stateless rules;
a graph with other stateful ops (``neuron``, a time-coded ``encode``) is refused.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from snnc.backends.torch.ops import ANN, channel_view
from snnc.ir import Graph
from snnc.ir import ops as O
from snnc.ir.ops_phase import PhaseDecode, PhaseMaxPool2d, PhaseNeuron, phase_levels_midpoint


def _param(op, p: dict[str, torch.Tensor], role: str, ndim: int):
    value = getattr(op, role)
    return value * channel_view(p[role], ndim) if role in p else value


def _tensors(graph: Graph) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in graph.params.items()}


def _neuron_sequence(op: PhaseNeuron, seq: torch.Tensor, p) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, spikes), both [T, N, ...], of a phase neuron whose input currents are ``seq``."""
    nd = seq.dim() - 1  # the rank of one step's value
    window = seq[op.start : op.start + op.window]
    if op.constant_input:
        x = window[0]
    else:
        x = torch.zeros_like(seq[0])
        for k in range(op.window):
            x = x + op.base ** (-k) * window[k]
    if "bias" in p:
        x = x + channel_view(p["bias"], nd)
    vth = _param(op, p, "v_th", nd)
    thresholds = [vth * op.base ** (-k) * phase_levels_midpoint(op.base) for k in range(op.window)]
    offset = sum((x < thr).long() for thr in thresholds)  # levels above x: the spike's delay
    spikes = torch.zeros_like(seq)
    for k in range(op.window):
        t = op.start + op.window + k
        if t < len(seq):
            spikes[t] = (offset == k).to(seq.dtype)
    return spikes * _param(op, p, "out_scale", nd), spikes


def _maxpool_sequence(op: PhaseMaxPool2d, seq: torch.Tensor) -> torch.Tensor:
    pooled = torch.stack([F.max_pool2d(s, op.kernel, op.stride, op.padding, 1, op.ceil_mode) for s in seq])
    segment = [0 if t < op.start else 1 + (t - op.start) // op.window for t in range(len(seq))]
    out = pooled.clone()
    for t in range(1, len(seq)):
        earlier = [u for u in range(t) if segment[u] == segment[t]]
        if earlier:
            out[t] = torch.where((pooled[earlier] > 0).any(dim=0), torch.zeros_like(pooled[t]), pooled[t])
    return out


def _decode_sequence(op: PhaseDecode, seq: torch.Tensor, p) -> torch.Tensor:
    out = torch.zeros_like(seq)
    for k in range(op.window):
        out[op.start + k] = op.total * op.base ** (-k) * seq[op.start + k]
    if "bias" in p:
        out[op.start] = out[op.start] + op.total * channel_view(p["bias"], seq.dim() - 1)
    return out


@torch.no_grad()
def simulate(graph: Graph, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Time-domain run over ``graph.attrs.timesteps`` steps: (readout's mean, spikes per sample)."""
    steps = graph.attrs.timesteps
    tensors = _tensors(graph)
    xin = torch.as_tensor(np.asarray(x, dtype=np.float32))
    seqs = {graph.inputs[0][0]: xin.expand(steps, *xin.shape)}
    spikes = 0.0
    readout = None
    for node in graph.nodes:
        ins = [seqs[v] for v in node.inputs]
        p = {role: tensors[key] for role, key in node.params.items()}
        op = node.op
        if isinstance(op, PhaseNeuron):
            seqs[node.name], s = _neuron_sequence(op, ins[0], p)
            spikes += float(s.sum()) / len(xin)
        elif isinstance(op, PhaseMaxPool2d):
            seqs[node.name] = _maxpool_sequence(op, ins[0])
        elif isinstance(op, PhaseDecode):
            seqs[node.name] = _decode_sequence(op, ins[0], p)
        elif isinstance(op, O.Readout):
            seqs[node.name] = readout = ins[0]
        elif isinstance(op, (O.Neuron, O.SpikeMaxPool2d)) or (
            isinstance(op, O.Encode) and op.scheme is not O.Scheme.DIRECT
        ):
            raise ValueError(f"phase_reference: {op.name} %{node.name} is not a phase-coding op")
        else:  # stateless: the same rule at every step
            seqs[node.name] = torch.stack(
                [ANN[type(op)](op, list(step), p) for step in zip(*ins, strict=True)]
            )
    assert readout is not None, "phase_reference.simulate needs a readout"
    return readout.mean(dim=0).numpy(), spikes


@torch.no_grad()
def ann_mode(graph: Graph, x: np.ndarray) -> np.ndarray:
    """ANN mode: each phase neuron gives out_scale·B^(−k*) for its level k* (0 below the last)."""
    tensors = _tensors(graph)
    env = {graph.inputs[0][0]: torch.as_tensor(np.asarray(x, dtype=np.float32))}
    for node in graph.nodes:
        ins = [env[v] for v in node.inputs]
        p = {role: tensors[key] for role, key in node.params.items()}
        op = node.op
        if isinstance(op, PhaseNeuron):
            current = ins[0] + channel_view(p["bias"], ins[0].dim()) if "bias" in p else ins[0]
            a = current.double() / _param(op, p, "v_th", ins[0].dim())
            mid = phase_levels_midpoint(op.base)
            k = torch.ceil(torch.log(mid / a.clamp_min(1e-300)) / np.log(op.base) - 1e-12).clamp_min(0)
            level = torch.where((a > 0) & (k < op.window), op.base ** (-k), torch.zeros_like(a))
            env[node.name] = (level * _param(op, p, "out_scale", a.dim())).float()
        elif isinstance(op, PhaseMaxPool2d):
            env[node.name] = F.max_pool2d(ins[0], op.kernel, op.stride, op.padding, 1, op.ceil_mode)
        elif isinstance(op, PhaseDecode):
            env[node.name] = ins[0] + channel_view(p["bias"], ins[0].dim()) if "bias" in p else ins[0]
        else:
            env[node.name] = ANN[type(op)](op, ins, p)
    return env[graph.outputs[0]].numpy()

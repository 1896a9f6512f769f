"""Reference semantics of the phase-coding ops (snnc/ir/ops_phase.py), for the tests.

The torch simulator (backends/torch/simulator.py) has no rules for ``phase_neuron``,
``phase_maxpool`` and ``phase_decode`` yet; these two functions run a phase-coded graph in the
time domain (the op docstrings, step by step) and in ANN mode (what the spikes stand for), every
other op by the torch backend's own rules.  They are written to be moved into the simulator.
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


@torch.no_grad()
def simulate(graph: Graph, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Time-domain run over ``graph.attrs.timesteps`` steps: (readout's mean, spikes per sample)."""
    steps = graph.attrs.timesteps
    tensors = _tensors(graph)
    xin = torch.as_tensor(np.asarray(x, dtype=np.float32))
    state: dict[str, dict[str, torch.Tensor]] = {}
    acc = torch.zeros(())
    spikes = 0.0
    for t in range(steps):
        env = {graph.inputs[0][0]: xin}
        for node in graph.nodes:
            ins = [env[v] for v in node.inputs]
            p = {role: tensors[key] for role, key in node.params.items()}
            op = node.op
            if isinstance(op, PhaseNeuron):
                cur = ins[0]
                st = state.setdefault(node.name, {"x": torch.zeros_like(cur),
                                                  "fired": torch.zeros_like(cur, dtype=torch.bool)})
                k = t - op.start
                s = torch.zeros_like(cur)
                if 0 <= k < op.window:
                    if not op.constant_input:
                        st["x"] = st["x"] + op.base ** (-k) * cur
                    elif k == 0:
                        st["x"] = cur.clone()
                    if k == op.window - 1 and "bias" in p:
                        st["x"] = st["x"] + channel_view(p["bias"], cur.dim())
                elif op.window <= k < 2 * op.window:
                    level = _param(op, p, "v_th", cur.dim()) * op.base ** (-(k - op.window))
                    fire = ~st["fired"] & (st["x"] >= level * phase_levels_midpoint(op.base))
                    st["fired"] = st["fired"] | fire
                    s = fire.to(cur.dtype)
                spikes += float(s.sum()) / len(xin)
                env[node.name] = s * _param(op, p, "out_scale", cur.dim())
            elif isinstance(op, PhaseMaxPool2d):
                m = F.max_pool2d(ins[0], op.kernel, op.stride, op.padding, 1, op.ceil_mode)
                st = state.setdefault(node.name, {"sent": torch.zeros_like(m, dtype=torch.bool)})
                if t >= op.start and (t - op.start) % op.window == 0:
                    st["sent"] = torch.zeros_like(st["sent"])
                env[node.name] = torch.where(st["sent"], torch.zeros_like(m), m)
                st["sent"] = st["sent"] | (m > 0)
            elif isinstance(op, PhaseDecode):
                k = t - op.start
                y = ins[0] * (op.total * op.base ** (-k)) if 0 <= k < op.window else ins[0] * 0
                if k == 0 and "bias" in p:
                    y = y + op.total * channel_view(p["bias"], y.dim())
                env[node.name] = y
            elif isinstance(op, O.Readout):
                env[node.name] = ins[0]
                acc = acc + ins[0]
            else:
                env[node.name] = ANN[type(op)](op, ins, p)
    return (acc / steps).numpy(), spikes


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

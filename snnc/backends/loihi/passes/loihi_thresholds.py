"""loihi-thresholds: thresholds and output scales for hard-reset neurons at the chosen T.

Loihi's neuron resets to 0 when it fires, so the charge above the threshold is lost.  For a
constant input ``a`` (strict threshold θ, ``v`` starting at 0) the neuron fires every
``k = floor(θ/a) + 1`` steps: over T steps it spikes ``n(a; θ) = floor(T / k)`` times, a coarse,
non-uniform quantiser (rates 1, 1/2, 1/3, …) instead of soft reset's ``floor(T a / θ)``.  With the
thresholds of ``calibrate`` (set for soft reset) the converted network loses accuracy (digits CNN at
T = 8: 94.4 % against 99.4 % with soft reset); this pass re-tunes, for every hard-reset neuron in
graph order:

* θ per channel: a grid search (``candidates`` values from 0.2 to 1.2 × the largest input current
  of the channel on the calibration data) minimising ``‖y − σ(θ) n(a; θ) / T‖²`` over the samples,
  where ``a`` is the neuron's input and ``y`` its output in ANN mode (the clipped activation the
  conversion approximates) and σ(θ) the least-squares output scale;
* σ (``out_scale``) per channel: the least-squares fit of ``y`` by ``σ r``, with ``r`` the spike
  rates the neuron really has when the SNN (with the layers before it already re-tuned) runs T
  steps on the calibration samples: this accounts for the irregular spike trains that reach the
  deeper layers;
* the hard-reset mean compensation (``mean-rounds`` rounds, 0: off): a least-squares σ leaves each
  channel's mean output ``σ r`` off the ANN's mean ``y`` (hard reset's lost charge is not a pure
  scale), and that error compounds layer by layer; each round moves the bias of the layer that feeds
  the neuron by ``−error · θ / σ`` (the current that shifts the mean output by −error), re-simulates
  the neuron and re-fits σ.  As in ``bias-correct``, only channels whose mean error exceeds
  ``z-score`` standard errors move.  ``bias-correct`` itself cannot do this after this pass: its
  reference, the graph's ANN mode, is ``σ · clamp(I / θ, 0, 1)`` with the *tuned* θ and σ, not the
  activation the conversion approximates (run after it, trained resnet18 fell to 13 %).

Changes: ``v_th`` and ``out_scale`` of hard-reset neurons (per channel where they differ), and the
biases of the conv2d / linear / scale that feed them (created where missing; through a residual add,
its weighted operand's; the graph's ANN mode moves with them).  A channel
that never receives positive input keeps its threshold; no threshold is set below ``min-ratio`` × the
layer's median (a near-silent channel's tiny θ, folded into its weights, would otherwise set the
layer's 8-bit weight grid alone: the digits MLP at T = 16 then falls from 97 % to 65 % when quantised).  Soft-reset neurons are left alone.
With labelled calibration data, ``ctx.results["loihi-thresholds"]["accuracy"]`` reports what hard
reset costs against soft reset (the same network with ``reset=soft, v_init=0.5``) before and after
the re-tuning, on the calibration samples used.
Requires: ``lower-neurons{reset=hard, v-init=0}``, before ``fold-thresholds``; calibration data and a
simulator in the context.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from snnc.errors import PassError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._neurons import neuron_vector, set_neuron_vector
from snnc.passes._params import add_to_bias, bias_owner
from snnc.passes._samples import channel_values, first_samples


def hard_reset_counts(a: np.ndarray, theta: np.ndarray, timesteps: int) -> np.ndarray:
    """Spikes per step of a strict, hard-reset IF neuron starting at 0 under constant input ``a``:
    ``floor(T / (floor(θ/a) + 1)) / T`` for ``a > 0``, else 0 (``theta`` broadcasts against ``a``)."""
    a = np.asarray(a, dtype=np.float64)
    pos = a > 0
    k = np.floor(theta / np.where(pos, a, 1.0)) + 1.0
    return np.where(pos, np.floor(timesteps / k), 0.0) / timesteps


def _lsq_scale(y: np.ndarray, r: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per row, the σ minimising ‖y − σ r‖² (``fallback`` where r is all zero)."""
    den = (r * r).sum(axis=1)
    return np.where(den > 0, (y * r).sum(axis=1) / np.where(den > 0, den, 1.0), fallback)


@register_pass
@dataclass(frozen=True)
class LoihiThresholds(Pass):
    name: ClassVar[str] = "loihi-thresholds"
    candidates: int = 51
    samples: int = 512  # calibration samples simulated (0: all)
    min_ratio: float = 0.0625  # no channel's threshold below this fraction of the layer's median
    # rounds of the hard-reset mean compensation (0: none): the feeding layer's bias moves each channel's
    # mean output onto the ANN's
    mean_rounds: int = 2
    z_score: float = 2.0  # a channel's mean is corrected only where its error exceeds this many standard errors

    def option_problems(self) -> list[str]:
        problems = []
        if self.candidates < 2:
            problems.append(f"candidates={self.candidates} must be >= 2")
        if self.samples < 0:
            problems.append(f"samples={self.samples} must be >= 0 (0: all)")
        if not 0.0 < self.min_ratio <= 1.0:
            problems.append(f"min-ratio={self.min_ratio} must be in (0, 1]")
        if self.mean_rounds < 0:
            problems.append(f"mean-rounds={self.mean_rounds} must be >= 0")
        if not self.z_score > 0:
            problems.append(f"z-score={self.z_score} must be > 0")
        return problems

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        if self.candidates < 2:
            raise PassError(f"loihi-thresholds: candidates={self.candidates} must be >= 2")
        if not 0.0 <= self.min_ratio <= 1.0:
            raise PassError(f"loihi-thresholds: min-ratio={self.min_ratio} must be in [0, 1]")
        sim = ctx.require_simulator(self.name)
        data = ctx.require_calibration(self.name)
        x, y = first_samples(ctx, self.name, -(-self.samples // data.batch_size) if self.samples > 0 else 0)
        if self.samples > 0:
            x, y = x[: self.samples], None if y is None else y[: self.samples]
        targets = [n for n in graph.nodes if isinstance(n.op, O.Neuron) and n.op.reset is O.Reset.HARD]
        if not targets:
            ctx.note("loihi-thresholds: no hard-reset neuron; nothing to tune")
            return
        for n in targets:
            if n.op.v_init != 0.0:  # type: ignore[attr-defined]
                raise PassError(f"loihi-thresholds: neuron %{n.name} has v_init={n.op.v_init}; "  # type: ignore[attr-defined]
                                "the model assumes v starts at 0 (lower-neurons{v-init=0})")
        T = ctx.timesteps
        before = _accuracy(sim, graph, x, y, T)
        soft = _accuracy(sim, _soft_variant(graph), x, y, T)
        record = [n.name for n in targets] + [n.inputs[0] for n in targets]
        ann = sim.run_ann(graph, x, record=record)
        layers: dict = {}
        tuned = set(n.name for n in targets)

        def tune(node: Node, simulate: Callable[..., list[torch.Tensor]]) -> np.ndarray | None:
            if node.name not in tuned:
                return None
            a = channel_values(ann[node.inputs[0]]).astype(np.float64)
            want = channel_values(ann[node.name]).astype(np.float64)
            theta0 = neuron_vector(graph, node, "v_th")
            theta = self._grid(a, want, theta0, T)
            # a near-silent channel would get a tiny θ, and once θ is folded its weights would set the
            # layer's 8-bit grid alone (loihi-quantize): its threshold is raised to a floor instead
            theta = np.maximum(theta, self.min_ratio * float(np.median(theta)))
            set_neuron_vector(graph, node, "v_th", theta)
            sigma0 = neuron_vector(graph, node, "out_scale")
            set_neuron_vector(graph, node, "out_scale", np.ones_like(sigma0))
            steps = simulate()  # out_scale 1: the spikes, with every neuron before it already tuned
            rate = channel_values(_mean(steps).cpu().numpy()).astype(np.float64)
            sigma = _lsq_scale(want, rate, theta)
            shift = np.zeros(len(theta))
            owner = bias_owner(graph, node) if self.mean_rounds else None
            for _ in range(self.mean_rounds if owner is not None else 0):
                diff = sigma[:, None] * rate - want
                error = diff.mean(axis=1)
                stderr = diff.std(axis=1) / np.sqrt(diff.shape[1])
                error = np.where(np.abs(error) > self.z_score * stderr, error, 0.0)
                if not error.any():
                    break
                # output = σ · rate ≈ σ · I / θ: the current that moves the mean output by −error
                shift = shift - error * theta / np.where(sigma > 0, sigma, theta)
                rate = channel_values(_mean(simulate(shift)).cpu().numpy()).astype(np.float64)
                sigma = _lsq_scale(want, rate, theta)
            set_neuron_vector(graph, node, "out_scale", sigma)
            layers[node.name] = {
                "theta_over_calibrated": float(np.mean(theta / theta0)),
                "scale_over_theta": float(np.mean(sigma / theta)),
                "spike_rate": float(rate.mean()),
            }
            if owner is None or not shift.any():
                return None
            add_to_bias(graph, owner, shift)
            layers[node.name]["bias_shift_over_theta"] = float(np.mean(np.abs(shift) / theta))
            return shift

        logits = _sweep(sim, graph, x, T, tune)
        graph.infer_types()
        result: dict = {"timesteps": T, "samples": int(len(x)), "layers": layers}
        if y is not None:
            exits = any(isinstance(n.op, O.Readout) and n.op.exit_rule is not O.ExitRule.NONE for n in graph.nodes)
            result["accuracy"] = {
                "split": "calibration",
                "soft_reset": soft,
                "hard_reset_calibrated_thresholds": before,
                "hard_reset": _accuracy(sim, graph, x, y, T) if exits else float((logits.argmax(1) == y).mean()),
            }
        ctx.results[self.name] = result

    def _grid(self, a: np.ndarray, want: np.ndarray, theta0: np.ndarray, T: int) -> np.ndarray:
        """Per channel, the θ of the grid whose hard-reset quantiser (with its best σ) fits best."""
        top = a.max(axis=1, initial=0.0)
        best = theta0.copy()
        best_err = np.full(len(theta0), np.inf)
        for f in np.linspace(0.2, 1.2, self.candidates):
            theta = np.where(top > 0, top * f, theta0)
            r = hard_reset_counts(a, theta[:, None], T)
            sigma = _lsq_scale(want, r, theta)
            err = ((want - sigma[:, None] * r) ** 2).sum(axis=1)
            better = err < best_err
            best = np.where(better, theta, best)
            best_err = np.where(better, err, best_err)
        return np.where(top > 0, best, theta0)


@torch.no_grad()
def _sweep(sim, graph: Graph, x: np.ndarray, T: int,
           tune: Callable[[Node, Callable[..., list[torch.Tensor]]], np.ndarray | None]) -> np.ndarray:
    """Simulate ``graph`` node by node, all T steps of a node before the next node (the same values as
    the simulator's step-by-step order: every node reads only earlier nodes), calling ``tune(node,
    simulate)`` before each node is evaluated; ``simulate(shift=None)`` runs the node's T steps with its
    current parameters (and a per-channel current ``shift`` added to its first input) and returns them.
    A shift that ``tune`` returns (the feeding layer's bias moved) is added to that input for good.  One simulation of the network in all: tuning neuron k sees every
    neuron before it tuned, without re-running them (re-simulating the prefix of each tuned neuron cost
    a quadratic number of layer steps: 88 s of 93 on mobilenet_v2).  Holds each value's T steps for all
    samples until its last reader ran.  Returns the readout's mean logits (N, classes)."""
    last = {v: i for i, node in enumerate(graph.nodes) for v in node.inputs}
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device=sim.device)
    env: dict[str, list[torch.Tensor]] = {graph.inputs[0][0]: [xt] * T}
    events: list[dict[str, torch.Tensor]] = [{} for _ in range(T)]
    state: dict = {}
    logits = None

    def run(node: Node, shift: np.ndarray | None = None) -> list[torch.Tensor]:
        one = Graph(graph.name, graph.inputs, nodes=[node], outputs=[node.name], attrs=graph.attrs,
                    params={k: graph.params[k] for k in node.params.values()})
        m = sim.module(one)  # this node's parameters as they are now
        state.pop(node.name, None)
        first = env[node.inputs[0]] if shift is None else _shifted(env[node.inputs[0]], shift)
        return [m.step(node, [first[t], *(env[v][t] for v in node.inputs[1:])], events[t], state, t, T)
                for t in range(T)]

    for i, node in enumerate(graph.nodes):
        shift = tune(node, functools.partial(run, node))
        if shift is not None:  # the feeding layer's bias moved: its current, read by this neuron alone, too
            env[node.inputs[0]] = _shifted(env[node.inputs[0]], shift)
        env[node.name] = run(node)
        if isinstance(node.op, O.Readout):
            logits = _mean(env[node.name]).cpu().numpy()
        for v in set(node.inputs):
            if last[v] == i and v not in graph.outputs:
                env.pop(v, None)
                for ev in events:
                    ev.pop(v, None)
    if logits is None:
        logits = _mean(env[graph.outputs[0]]).cpu().numpy()
    return logits


def _shifted(steps: list[torch.Tensor], shift: np.ndarray) -> list[torch.Tensor]:
    """Every step's current plus a per-channel ``shift`` (what a bias change adds at every step)."""
    view = torch.as_tensor(shift, dtype=steps[0].dtype, device=steps[0].device)
    view = view.reshape((1, -1) + (1,) * (steps[0].dim() - 2))
    return [s + view for s in steps]


def _mean(steps: list[torch.Tensor]) -> torch.Tensor:
    """The mean over steps, summed in step order as the simulator's readout does."""
    total = steps[0]
    for s in steps[1:]:
        total = total + s
    return total / len(steps)


def _soft_variant(graph: Graph) -> Graph:
    """The same network with soft reset and the half-threshold start (the ann-to-snn conversion)."""
    g = graph.copy()
    for node in g.nodes:
        if isinstance(node.op, O.Neuron) and node.op.reset is O.Reset.HARD:
            node.op = dataclasses.replace(node.op, reset=O.Reset.SOFT, v_init=0.5)
    return g


def _accuracy(sim, graph: Graph, x: np.ndarray, y: np.ndarray | None, T: int) -> float | None:
    if y is None:
        return None
    return float((sim.run_snn(graph, x, T).predictions == y).mean())


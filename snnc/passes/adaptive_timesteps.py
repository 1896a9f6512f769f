"""adaptive-timesteps: input-aware early exit (IAT, Wang et al. 2025; after SEENN).

Sets the readout's exit rule and its per-step thresholds ``exit_thresholds`` (parameter
``<readout>.exit_thresholds``, one per step t = 1..T).  The simulator stops a sample at the
first step whose score exceeds τ_t and reports the steps it used.

Scores (what the simulator compares, ``exit_score``): ``entropy``: 1 − H(p_t)/log C;
``confidence``: max p_t, with p_t the softmax of the readout's running mean at step t.

Thresholds from labelled calibration data (first ``batches`` batches): u_t = the mean
*uncertainty* 1 − score of the samples classified correctly at step t (all samples if none
is), and τ_t = 0.6 + 0.4·exp(min_t u_t − u_t).  For ``entropy`` u_t is the mean normalised
entropy, which is exactly burst-ann2snn's formula; its code then compares these entropy-based
thresholds with 1 − entropy, and so do we: exp(min u − u_t) = exp(score_t − max score), so
τ_t is a function of the score, and the comparison is like with like.  For ``confidence`` the
uncertainty is 1 − max p (the original used the same entropy-based τ for both metrics).
τ = 1 at the step where correct samples are most certain (usually the last): a sample
never exits there early, and runs to T if nothing fired before.

The per-step scores come from one simulation of T steps read at every t (the torch simulator's
``run_snn_steps``: a step does not depend on how many follow), not from T runs of 1..T steps.

Guard (``max-loss``, default 0): the rule's accuracy on the calibration samples (from the same
per-step scores, no further simulation) must stay within ``max-loss`` of their accuracy at T.
Where it does not, every τ_t is raised towards 1 as τ_t' = 1 − α·(1 − τ_t), with the largest α in
{1, 0.98, …, 0} that meets it (α = 0: no sample exits early).  Without it the rule cost the fast
pipeline 8-11 points at T = 8 on squeezenet1_1 (150 test images, docs/real_models.md).

Changes: the readout's ``exit_rule`` and its ``exit_thresholds`` parameter.  Reports the
thresholds, calibration accuracy and mean steps used in ``ctx.results``.
Preserves: everything else; predictions of samples that run to T are unchanged.
Requires: a readout (lower-neurons), labelled calibration data, a simulator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from snnc.errors import PassError
from snnc.ir import Graph
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._params import with_attrs
from snnc.passes._samples import first_samples
from snnc.passes._sensitivity import softmax

FLOOR, SPAN = 0.6, 0.4  # τ_t ∈ (FLOOR, FLOOR + SPAN]


@runtime_checkable
class _ReadsSteps(Protocol):
    """A simulator that returns the runs of several step counts from one run of the largest
    (the torch simulator's ``run_snn_steps``)."""

    def run_snn_steps(self, graph: Graph, x: Any, timesteps: Sequence[int]) -> dict[int, Any]: ...


def exit_scores(rule: O.ExitRule, logits: np.ndarray) -> np.ndarray:
    """The score the simulator compares with τ_t (numpy twin of the simulator's rule)."""
    p = softmax(np.asarray(logits, dtype=np.float64))
    if rule is O.ExitRule.CONFIDENCE:
        return p.max(axis=1)
    entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    return 1.0 - entropy / math.log(p.shape[1])


@register_pass
@dataclass(frozen=True)
class AdaptiveTimesteps(Pass):
    name: ClassVar[str] = "adaptive-timesteps"
    metric: O.ExitRule = O.ExitRule.ENTROPY
    batches: int = 4
    max_loss: float = 0.0  # calibration accuracy the exit rule may lose against running to T

    def option_problems(self) -> list[str]:
        problems = [f"batches={self.batches} must be >= 1"] if self.batches < 1 else []
        if not 0.0 <= self.max_loss <= 1.0:
            problems.append(f"max-loss={self.max_loss} must be in [0, 1]")
        return problems

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        if self.metric is O.ExitRule.NONE:
            raise PassError("adaptive-timesteps: metric must be entropy or confidence")
        readouts = [n for n in graph.nodes if isinstance(n.op, O.Readout)]
        if len(readouts) != 1:
            raise PassError(f"adaptive-timesteps needs exactly one readout, found {len(readouts)}; run lower-neurons")
        sim = ctx.require_simulator(self.name)
        x, y = first_samples(ctx, self.name, self.batches, labelled=True)
        T = ctx.timesteps
        plain = graph.copy()
        plain.node(readouts[0].name).op = with_attrs(readouts[0].op, exit_rule=O.ExitRule.NONE)
        plain.node(readouts[0].name).params.pop("exit_thresholds", None)
        uncertainty = np.empty(T)
        scores = np.empty((T, len(x)))
        correct = np.empty((T, len(x)), dtype=bool)
        with ctx.track(self.name, T) as bar:
            # the running mean at step t = a t-step run (causal, deterministic): one run of T steps read
            # at every t where the simulator can (T steps simulated, not T·(T+1)/2)
            runs = sim.run_snn_steps(plain, x, range(1, T + 1)) if isinstance(sim, _ReadsSteps) else None
            for t in range(1, T + 1):
                logits = runs[t].logits if runs is not None else sim.run_snn(plain, x, t).logits
                scores[t - 1] = exit_scores(self.metric, logits)
                correct[t - 1] = logits.argmax(axis=1) == y
                pick = correct[t - 1] if correct[t - 1].any() else np.ones(len(x), dtype=bool)
                uncertainty[t - 1] = float(np.mean(1.0 - scores[t - 1][pick]))
                bar.advance()
        tau = _guard(FLOOR + SPAN * np.exp(uncertainty.min() - uncertainty), scores, correct, self.max_loss)
        readout = readouts[0]
        key = readout.params.get("exit_thresholds") or graph.fresh_param(f"{readout.name}.exit_thresholds")
        graph.params[key] = tau.astype(np.float32)
        readout.params["exit_thresholds"] = key
        readout.op = with_attrs(readout.op, exit_rule=self.metric)
        graph.infer_types()
        steps, accuracy = _simulate_exit(scores, correct, tau)
        ctx.results[self.name] = {
            "metric": self.metric.value,
            "thresholds": [float(v) for v in tau],
            "calibration_mean_steps": steps,
            "calibration_accuracy": accuracy,
            "calibration_accuracy_full_T": float(correct[-1].mean()),
        }


def _guard(tau: np.ndarray, scores: np.ndarray, correct: np.ndarray, max_loss: float) -> np.ndarray:
    """τ raised towards 1 (the largest α of 1 − α·(1 − τ) on a 0.02 grid) until the exit rule's
    calibration accuracy is within ``max_loss`` of the accuracy at T."""
    floor = float(correct[-1].mean()) - max_loss - 1e-12
    for alpha in np.linspace(1.0, 0.0, 51):
        raised = 1.0 - alpha * (1.0 - tau)
        if _simulate_exit(scores, correct, raised)[1] >= floor:
            return raised
    return np.ones_like(tau)  # unreachable: α = 0 exits nowhere early


def _simulate_exit(scores: np.ndarray, correct: np.ndarray, tau: np.ndarray) -> tuple[float, float]:
    """Mean steps and accuracy of the exit rule, from per-step scores (T, N)."""
    T, n = scores.shape
    exits = scores > tau[:, None]
    exits[-1] = True
    first = exits.argmax(axis=0)
    return float(np.mean(first + 1)), float(np.mean(correct[first, np.arange(n)]))

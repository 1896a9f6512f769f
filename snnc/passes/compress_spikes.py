"""compress-spikes: Sensitivity Spike Compression (SSC, Wang et al. 2025).

Raises per-layer thresholds to cut spikes where the network does not mind:
1. for each neuron layer l and ratio r ∈ ``ratios`` (default 1.0, 1.5, …, 10.0), multiply
   only layer l's threshold and output scale by r and simulate one calibration batch:
   sensitivity S_{l,r} = symmetric KL between the softmaxes of the SNN and of the graph's ANN
   mode (taken before any change), cost E_{l,r} = spikes of layer l;
2. Pareto dynamic programme with the roles of AdaFire swapped: minimise Σ E subject to
   Σ_l S_{l,r_l} ≤ budget · Σ_l S_{l,1};
3. joint check: the per-layer divergences do not add (raising many thresholds at once compounds):
   simulate the probe batch with every chosen ratio at once; while its divergence exceeds
   max(1, budget) × the baseline's, halve every r_l − 1 (at most 4 times, then all ratios are 1).
   Without it, behind AdaFire on squeezenet1_1 at T = 8 this pass took the SNN from 87 % to 57 %
   (150 test images; docs/real_models.md);
4. apply θ_l ← r_l·θ_l, then bias-correct (light calibration) on the first ``batches``
   calibration batches.

Each S_{l,1} is the baseline SNN's divergence, so the limit is budget·L·S_base: with
budget < 1 the chosen ratios must, summed over layers, *improve* on the baseline (the
burst-ann2snn default 0.95); budget = 1 allows no net loss; larger budgets trade accuracy
for spikes.  When no setting meets the limit every ratio stays 1 (a note says so).

The sensitivity runs simulate each variant only from the changed layer on (``cache``, as in
adafire: the same logits and spike counts as whole runs), a layer's ratios together, stacked along
the batch (``stack``, as in adafire).  Neurons with negative spikes (signed,
rectified, bursts of them) are scaled like any other; their −1 spikes count as spikes.

Changes: neuron thresholds / output scales, biases (bias correction).  Reports the ratios
and spike counts in ``ctx.results["compress-spikes"]``.
Requires: neurons (before or after fold-thresholds), calibration data and a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.ir import Graph
from snnc.ir.analyses import Analyses
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._neurons import require_neurons, scale_threshold
from snnc.passes._samples import first_samples
from snnc.passes._sensitivity import Choice, Variants, pareto_select, sym_kl
from snnc.passes.bias_correct import correct_biases

DEFAULT_RATIOS = tuple(1.0 + 0.5 * i for i in range(19))  # 1.0, 1.5, ..., 10.0
JOINT_HALVINGS = 4  # back-off steps of the joint check before every ratio returns to 1


@register_pass
@dataclass(frozen=True)
class CompressSpikes(Pass):
    name: ClassVar[str] = "compress-spikes"
    budget: float = 0.95
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    batches: int = 2
    # simulate each variant only from its changed layer on (the same floats; tests/test_sensitivity_cache.py)
    cache: bool = True
    # simulate a layer's variants together, stacked along the batch (Variants.run_all)
    stack: bool = True
    # the sweep's probe: the first N calibration samples (N <= batches x batch size); 0: one batch
    samples: int = 0

    def option_problems(self) -> list[str]:
        problems = []
        if self.budget <= 0:
            problems.append(f"budget={self.budget} must be > 0")
        if not self.ratios or min(self.ratios) < 1.0 or 1.0 not in self.ratios:
            problems.append(f"ratios {list(self.ratios)} must include 1.0 and be >= 1")
        if self.batches < 1:
            problems.append(f"batches={self.batches} must be >= 1")
        if self.samples < 0:
            problems.append(f"samples={self.samples} must be >= 0")
        return problems

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        sim = ctx.require_simulator(self.name)
        layers = require_neurons(graph, self.name)
        x, _ = first_samples(ctx, self.name, self.batches)
        probe = x[: self.samples or ctx.require_calibration(self.name).batch_size]
        reference = sim.run_ann(graph, probe)[graph.outputs[0]]
        ratios = sorted(set(self.ratios))
        base = sim.run_snn(graph, probe, ctx.timesteps)
        base_kl = sym_kl(base.logits, reference)
        plain = graph.copy()
        plain.analyses = Analyses()  # only simulated: copying the calibration statistics per variant is wasted
        variants = Variants(sim, plain, probe, ctx.timesteps, layers, cache=self.cache, stack=self.stack)
        options: list[list[Choice]] = []
        raised = [r for r in ratios if r != 1.0]
        with ctx.track("compress-spikes sensitivity", len(layers) * len(raised)) as bar:
            for n in layers:
                graphs = []
                for r in raised:
                    g = plain.copy()
                    scale_threshold(g, g.node(n.name), np.array(r))
                    graphs.append(g)
                runs = dict(zip(raised, variants.run_all(graphs, n.name), strict=True))
                options.append([Choice(limited=base_kl, objective=base.spikes[n.name]) if r == 1.0 else
                                Choice(limited=sym_kl(runs[r][0], reference), objective=runs[r][1])
                                for r in ratios])
                bar.advance(len(raised))
        limit = self.budget * len(layers) * base_kl
        picks = pareto_select(options, limit)
        if picks is None:
            ctx.note(f"compress-spikes: no ratios meet budget={self.budget} (baseline symKL {base_kl:.4g}); "
                     "thresholds unchanged")
            picks = [ratios.index(1.0)] * len(layers)
        chosen = {n.name: ratios[i] for n, i in zip(layers, picks, strict=True)}
        chosen, joint_kl = self._joint_guard(sim, graph, layers, chosen, probe, ctx.timesteps, reference, base_kl)
        for n in layers:
            if chosen[n.name] != 1.0:
                scale_threshold(graph, n, np.array(chosen[n.name]))
        graph.infer_types()
        correct_biases(ctx, graph, x, self.name)
        ctx.results[self.name] = {
            "ratios": chosen,
            "baseline_sym_kl": base_kl,
            "joint_sym_kl": joint_kl,
            "spikes_before": sum(base.spikes[n.name] for n in layers),
            "spikes_after_estimate": sum(options[i][p].objective for i, p in enumerate(picks)),
        }

    def _joint_guard(self, sim, graph: Graph, layers, chosen: dict[str, float], probe, timesteps: int, reference,
                     base_kl: float) -> tuple[dict[str, float], float]:
        """The chosen ratios, each r − 1 halved (at most ``JOINT_HALVINGS`` times, then all 1) until
        the network with all of them at once diverges from the ANN by at most max(1, budget) × the
        baseline's symmetric KL on the probe batch; and that KL."""
        for _ in range(JOINT_HALVINGS + 1):
            if all(r == 1.0 for r in chosen.values()):
                return chosen, base_kl
            g = graph.copy()
            for n in layers:
                scale_threshold(g, g.node(n.name), np.array(chosen[n.name]))
            kl = sym_kl(sim.run_snn(g, probe, timesteps).logits, reference)
            if kl <= max(1.0, self.budget) * base_kl:
                return chosen, kl
            chosen = {k: 1.0 + (r - 1.0) / 2 for k, r in chosen.items()}
        return {k: 1.0 for k in chosen}, base_kl

"""adafire: per-layer burst limits chosen by a sensitivity search (AdaFire, Wang et al. 2025).

A burst neuron may send up to φ spikes per step (``max_spikes`` = φ): with threshold θ_φ its
top level is φ·θ_φ, so a layer resolves T·φ levels instead of T, at the price of more spikes.

1. Record every neuron's input current in ANN mode on the first ``batches`` calibration
   batches; for each layer and φ ∈ {min-spikes … max-spikes} find θ_φ by the clip-floor grid
   search at T = ``ctx.timesteps`` (calibrate's ``mse`` method with top level φ·θ, per channel
   when the neuron has per-channel thresholds).
2. Baseline: every layer at φ = max-spikes.  For each layer l and each φ, change only layer l
   and simulate one calibration batch: sensitivity S_{l,φ} = symmetric KL between the
   softmaxes of the SNN and of the graph's ANN mode, cost E_{l,φ} = spikes of layer l (a burst
   of n counts n).
3. Pareto dynamic programme: minimise Σ S subject to Σ E ≤ budget · Σ_l E_{l,φ_d}, with
   φ_d = ``desired-spikes`` (default: max-spikes, as burst-ann2snn does when searching).
   Apply the chosen φ_l and θ_{l,φ_l} (v_th and out_scale).

Neurons with negative spikes keep them: a rectified neuron becomes a burst neuron that also
sends up to φ −1 spikes to take back earlier ones, a signed one codes its signed value with up to
φ spikes of either sign (``snnc.ir.ops.Neuron``); a signed neuron's θ_φ is searched on |I|.

The sensitivity runs simulate each variant only from the changed layer on, from the values the
baseline recorded at every step (``cache``, the default; the same logits and spike counts as a
whole run, tests/test_sensitivity_cache.py): on squeezenet1_1 at T = 4, 33 s of CPU with it and
57 s without, the same choices (docs/real_models.md).  With ``stack`` (the default) the φ variants
of one layer run as one simulation, stacked along the batch, each variant its own slice (samples
do not interact; ``Variants.run_all``): the same work in fewer, larger steps, the same choices
(tests/test_sensitivity_cache.py; on the real models of docs/real_models.md too).

Changes: every neuron's ``max_spikes`` (its values become ``burst<φ>``) and threshold /
output scale.  Reports the chosen limits in ``ctx.results["adafire"]``.
Preserves: the structure, each neuron's ``negative`` rule; the graph keeps approximating the ANN
(the quantiser changes).
Requires: neurons not yet folded or folded (thresholds are scaled in place; run
fold-thresholds after it), calibration data and a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.ir.analyses import Analyses
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._neurons import neuron_vector, require_neurons, scale_threshold
from snnc.passes._params import with_attrs
from snnc.passes._samples import MAX_VALUES_PER_CHANNEL, channel_values, first_samples, subsample
from snnc.passes._sensitivity import Choice, Variants, pareto_select, sym_kl
from snnc.passes._thresholds import mse_thresholds


@register_pass
@dataclass(frozen=True)
class AdaFire(Pass):
    name: ClassVar[str] = "adafire"
    max_spikes: int = 4
    min_spikes: int = 1
    budget: float = 0.95
    desired_spikes: int = 0  # the φ whose spike count sets the budget; 0: max-spikes
    batches: int = 4
    # simulate each variant only from its changed layer on (the same floats; tests/test_sensitivity_cache.py)
    cache: bool = True
    # simulate a layer's variants together, stacked along the batch (Variants.run_all)
    stack: bool = True
    # the sweep's probe: the first N calibration samples (N <= batches x batch size); 0: one batch
    samples: int = 0
    # the burst limits the sweep tries (each in min-spikes..max-spikes, with max- and desired-spikes); (): all
    levels: tuple[int, ...] = ()

    def option_problems(self) -> list[str]:
        problems = []
        if not 1 <= self.min_spikes <= self.max_spikes:
            problems.append(f"need 1 <= min-spikes ({self.min_spikes}) <= max-spikes ({self.max_spikes})")
        if self.budget <= 0:
            problems.append(f"budget={self.budget} must be > 0")
        desired = self.desired_spikes or self.max_spikes
        if not self.min_spikes <= desired <= self.max_spikes:
            problems.append(f"desired-spikes={desired} must be within [{self.min_spikes}, {self.max_spikes}]")
        if self.batches < 1:
            problems.append(f"batches={self.batches} must be >= 1")
        if self.samples < 0:
            problems.append(f"samples={self.samples} must be >= 0")
        if self.levels and not (all(self.min_spikes <= b <= self.max_spikes for b in self.levels)
                                and {self.max_spikes, desired} <= set(self.levels)):
            problems.append(f"levels {list(self.levels)} must lie in [{self.min_spikes}, {self.max_spikes}] and "
                            f"include max-spikes ({self.max_spikes}) and desired-spikes ({desired})")
        return problems

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        desired = self.desired_spikes or self.max_spikes
        sim = ctx.require_simulator(self.name)
        layers = require_neurons(graph, self.name)
        x, _ = first_samples(ctx, self.name, self.batches)
        probe = x[: self.samples or ctx.require_calibration(self.name).batch_size]
        phis = sorted(set(self.levels)) if self.levels else list(range(self.min_spikes, self.max_spikes + 1))
        factors = self._threshold_factors(ctx, graph, layers, x, phis)
        reference = sim.run_ann(graph, probe)[graph.outputs[0]]

        def configured(choice: dict[str, int]) -> Graph:
            g = graph.copy()
            for n in layers:
                _set_burst(g, g.node(n.name), choice[n.name], factors[n.name][choice[n.name]])
            return g

        top = configured({n.name: self.max_spikes for n in layers})
        top.analyses = Analyses()  # only simulated: copying the calibration statistics per variant is wasted

        def one_changed(n: Node, phi: int) -> Graph:
            """``configured`` of top with layer n at φ: n set afresh from ``graph``, the rest shared
            with ``top`` (configuring every layer per variant costs L² per layer on a deep net)."""
            g = top.copy()
            node = g.node(n.name)
            node.op, node.params = n.op, dict(n.params)
            for key in n.params.values():  # a key only n reads was rescaled in top: n's own values
                g.params[key] = graph.params[key]
            _set_burst(g, node, phi, factors[n.name][phi])
            return g

        variants = Variants(sim, top, probe, ctx.timesteps, layers, cache=self.cache, stack=self.stack)
        options: list[list[Choice]] = []
        with ctx.track("adafire sensitivity", len(layers) * len(phis)) as bar:
            for n in layers:
                runs = variants.run_all([one_changed(n, phi) for phi in phis], n.name)
                options.append([Choice(limited=spikes, objective=sym_kl(logits, reference)) for logits, spikes in runs])
                bar.advance(len(phis))
        limit = self.budget * sum(row[phis.index(desired)].limited for row in options)
        picks = pareto_select(options, limit)
        if picks is None:  # unreachable: min-spikes everywhere costs least; kept for odd budgets
            ctx.note(f"adafire: no setting meets budget={self.budget}; every layer gets min-spikes")
            picks = [0] * len(layers)
        chosen = {n.name: phis[i] for n, i in zip(layers, picks, strict=True)}
        for n in layers:
            _set_burst(graph, n, chosen[n.name], factors[n.name][chosen[n.name]])
        graph.infer_types()
        ctx.results[self.name] = {
            "max_spikes": chosen,
            "spikes_budget": limit,
            "spikes": sum(options[i][p].limited for i, p in enumerate(picks)),
        }

    def _threshold_factors(self, ctx, graph, layers, x, phis) -> dict[str, dict[int, np.ndarray]]:
        """θ_φ / θ per layer and φ, from the neuron's normalised input current I / v_th."""
        sim = ctx.require_simulator(self.name)
        currents = sim.run_ann(graph, x, record=sorted({n.inputs[0] for n in layers}))
        out: dict[str, dict[int, np.ndarray]] = {}
        for n in layers:
            theta = neuron_vector(graph, n, "v_th")
            op: O.Neuron = n.op  # type: ignore[assignment]
            values = channel_values(currents[n.inputs[0]])
            # a signed neuron codes −a as it codes a (its levels are symmetric): search on |I|
            values = np.abs(values) if op.negative is O.Negative.SIGNED else np.maximum(values, 0.0)
            rows = values / theta[:, None]
            per_channel = "v_th" in n.params
            if not per_channel:
                rows = rows.reshape(1, -1)
            rows = subsample(rows, MAX_VALUES_PER_CHANNEL, ctx.seed)
            out[n.name] = {phi: mse_thresholds(rows, ctx.timesteps, op.v_init, phi) for phi in phis}
        return out


def _set_burst(graph: Graph, node: Node, phi: int, factor: np.ndarray) -> None:
    node.op = with_attrs(node.op, max_spikes=phi)
    scale_threshold(graph, node, factor)

"""d2e-finetune: a short fine-tune of the event-coded SNN, distilled from its direct-coded teacher.

Trains the weights and biases of every synaptic layer (thresholds, leaks and the encoder stay
as they are) for ``epochs`` passes over the labelled calibration data, with the event-driven
forward of the simulator (the graph's own encoder; spikes made differentiable by the
simulator's straight-through surrogate), Adam at ``lr`` with a cosine schedule, and the loss

    α·CE(z_s, y) + (1 − α)·τ²·KL(softmax(z_t/τ) ‖ softmax(z_s/τ)) + λ·r

* z_s: the student's logits (the readout's mean over T); z_t: the frozen direct-coded
  teacher's (the graph d2e-encode kept, run once at the same T); α = ``kd-alpha``,
  τ = ``temperature``: self-distillation from the direct-coded teacher, the better
  documented D2E variant (research notes §1);
* r: the spike rate weighted by what spikes cost, an L1 penalty (spikes are >= 0) with
  weight λ = ``rate-l1``: r = Σ_l w_l·r_l / Σ_l w_l, where r_l is layer l's mean spike count
  per neuron and step and w_l the synapses its neurons drive (the dense MACs of the synaptic
  ops that read it, through flatten / reshape / pooling), so r is the fraction of the
  possible accumulates that happen.  A layer read only by the readout costs no synapse and
  is not penalised; input encoders are left out (nothing upstream of them trains).

A progress bar counts epochs.  Deterministic for a given ``seed`` (the batch order) on a
given machine and thread count: nothing else is random (a rate encoder draws from its own
seeded generator).
Changes: the weight and bias tensors of the synaptic layers (new arrays under the same keys).
Preserves: the structure, the neurons and the encoders.  Reports the loss, the running
training accuracy and r for every epoch.
Requires: labelled calibration data (``y``), a simulator that can train, and d2e-encode
earlier in the pipeline (it keeps the teacher) unless ``kd-alpha`` = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from snnc.data import Samples
from snnc.errors import PassError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._neurons import require_neurons
from snnc.passes.count_ops import dense_macs
from snnc.passes.d2e_encode import network_neurons, teacher_of, timesteps_of

TRAINED_ROLES = ("weight", "bias")


def trainable_keys(graph: Graph) -> list[str]:
    """Store keys of the weights and biases of the synaptic layers, in graph order, once each."""
    keys: list[str] = []
    for node in graph.nodes:
        if node.op.synaptic:
            keys += [node.params[r] for r in TRAINED_ROLES if r in node.params and node.params[r] not in keys]
    return keys


def synapse_load(graph: Graph, neuron: Node) -> float:
    """The synapses ``neuron``'s layer drives: the dense MACs of the synaptic ops reading its
    spikes (through structure and pooling ops), shared among the operands of an add."""
    total = 0.0
    frontier, seen = [neuron.name], set()
    while frontier:
        value = frontier.pop()
        for user in graph.users(value):
            if user.name in seen:
                continue
            seen.add(user.name)
            if user.op.synaptic:
                total += dense_macs(graph, user) / len(user.inputs)
            elif user.op.shape_only or user.op.channelwise or isinstance(user.op, O.Concat):  # spikes pass on
                frontier.append(user.name)
    return total


@register_pass
@dataclass(frozen=True)
class D2EFinetune(Pass):
    name: ClassVar[str] = "d2e-finetune"
    epochs: int = 30
    lr: float = 2e-3
    rate_l1: float = 1.0
    kd_alpha: float = 0.4
    temperature: float = 2.0
    seed: int = 0
    batch_size: int = 64

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        data = ctx.require_calibration(self.name, labelled=True)
        sim = ctx.require_simulator(self.name)
        require_neurons(graph, self.name)
        timesteps = timesteps_of(ctx, graph)
        keys = trainable_keys(graph)
        if not keys:
            raise PassError("d2e-finetune: the graph has no weights or biases to train")
        # a streamed data set stays lazy: each step reads its batch's rows (snnc.data.Samples)
        x = data.x if isinstance(data.x, Samples) else np.asarray(data.x, dtype=np.float32)
        y = np.asarray(data.y, dtype=np.int64)
        if len(x) == 0:
            raise PassError("d2e-finetune: the calibration data is empty")
        teacher = None
        if self.kd_alpha < 1.0:
            teacher = sim.run_snn(teacher_of(graph, self.name), x, timesteps).logits.astype(np.float32)
        loads = {n.name: synapse_load(graph, n) for n in network_neurons(graph)}
        loads = {k: v for k, v in loads.items() if v > 0}
        history = self._train(ctx, graph, sim, keys, loads, x, y, teacher, timesteps)
        ctx.results[self.name] = {"epochs": self.epochs, "trained_tensors": len(keys), "history": history}

    def option_problems(self) -> list[str]:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs={self.epochs} must be >= 1")
        if not self.lr > 0:
            problems.append(f"lr={self.lr} must be > 0")
        if not 0.0 <= self.kd_alpha <= 1.0:
            problems.append(f"kd-alpha={self.kd_alpha} must be in [0, 1]")
        if not self.temperature > 0:
            problems.append(f"temperature={self.temperature} must be > 0")
        if not self.rate_l1 >= 0:
            problems.append(f"rate-l1={self.rate_l1} must be >= 0")
        if self.batch_size < 1:
            problems.append(f"batch-size={self.batch_size} must be >= 1")
        return problems

    def _train(self, ctx, graph, sim, keys, loads, x, y, teacher, timesteps) -> list[dict[str, Any]]:
        """The training loop; writes the trained tensors back into ``graph``."""
        import torch

        rng = np.random.default_rng(self.seed)
        history: list[dict[str, Any]] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            module = sim.trainable(graph, keys)
            opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=self.lr)
            steps = self.epochs * math.ceil(len(x) / self.batch_size)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
            with ctx.track(self.name, self.epochs) as bar:
                for epoch in range(self.epochs):
                    sums = {"loss": 0.0, "train_accuracy": 0.0, "spike_cost": 0.0}
                    order = rng.permutation(len(x))
                    for start in range(0, len(x), self.batch_size):
                        idx = order[start : start + self.batch_size]
                        logits, rates = sim.surrogate_run(module, x[idx], timesteps)
                        target = torch.as_tensor(y[idx], device=logits.device)
                        soft = (
                            None if teacher is None else torch.as_tensor(teacher[idx], device=logits.device)
                        )
                        cost = self._spike_cost(rates, loads, logits)
                        loss = self._distillation(logits, target, soft) + self.rate_l1 * cost
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                        sched.step()
                        sums["loss"] += float(loss.detach()) * len(idx)
                        sums["train_accuracy"] += float((logits.argmax(1) == target).sum())
                        sums["spike_cost"] += float(cost.detach()) * len(idx)
                    history.append({"epoch": epoch + 1} | {k: v / len(x) for k, v in sums.items()})
                    bar.advance()
            trained = sim.read_params(module, keys)
        for key, value in trained.items():
            graph.params[key] = value
        return history

    def _distillation(self, logits, target, teacher):
        """α·CE(z_s, y) + (1 − α)·τ²·KL(softmax(z_t/τ) ‖ softmax(z_s/τ)) (the CE term alone without a teacher)."""
        import torch.nn.functional as F

        loss = self.kd_alpha * F.cross_entropy(logits, target)
        if teacher is None:
            return loss
        tau = self.temperature
        kl = F.kl_div(
            F.log_softmax(logits / tau, 1),
            F.log_softmax(teacher / tau, 1),
            log_target=True,
            reduction="batchmean",
        )
        return loss + (1.0 - self.kd_alpha) * tau * tau * kl

    @staticmethod
    def _spike_cost(rates, loads: dict[str, float], logits):
        """Σ_l w_l·r_l / Σ_l w_l: the fraction of the possible accumulates that spikes cause."""
        total = sum(loads.values())
        if not total:
            return logits.new_zeros(())
        return sum(rates[name] * (w / total) for name, w in loads.items())

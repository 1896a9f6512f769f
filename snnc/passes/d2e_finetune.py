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

Under torchrun (docs/cluster.md) the training is data-parallel with torch's
``DistributedDataParallel``: every rank draws the same seeded batch order, takes its contiguous
share of each global batch of ``batch-size`` samples (reading only those rows), and DDP averages
the gradients in ``backward``; each rank's loss is weighted by its share of the batch, so the
averaged gradient is the one-process gradient of the whole batch, up to float rounding (the
sums run in another order): the result is close to, not bit for bit, the one-process result.
Every rank ends with the same parameters; only rank 0 writes the artifact.  The teacher's
logits are computed batch by batch, shared over the ranks and gathered.

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

from snnc import distributed
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
            teacher = _teacher_logits(sim, teacher_of(graph, self.name), x, timesteps, data.batch_size)
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
        world = distributed.world_size()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            snn = surrogate_module(sim, graph, keys, timesteps)
            net = distributed.data_parallel(snn)  # snn itself in one process
            opt = torch.optim.Adam([p for p in snn.parameters() if p.requires_grad], lr=self.lr)
            steps = self.epochs * math.ceil(len(x) / self.batch_size)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
            with ctx.track(self.name, self.epochs) as bar:
                for epoch in range(self.epochs):
                    sums = {"loss": 0.0, "train_accuracy": 0.0, "spike_cost": 0.0}
                    order = rng.permutation(len(x))  # the same on every rank: the same global batches
                    for start in range(0, len(x), self.batch_size):
                        batch = order[start : start + self.batch_size]
                        idx = distributed.my_share(batch)
                        # a rank's mean loss weighted by its share of the batch: DDP's average over the
                        # ranks is then the mean over the whole batch, as in one process
                        weight = world * len(idx) / len(batch)
                        if len(idx) == 0:
                            # fewer rows than ranks: DDP needs every rank in every backward, so this
                            # rank runs one row at weight 0, counted nowhere
                            idx = batch[:1]
                        xb = torch.as_tensor(np.asarray(x[idx], dtype=np.float32))
                        logits, rates = net(xb)
                        target = torch.as_tensor(y[idx], device=logits.device)
                        soft = (
                            None if teacher is None else torch.as_tensor(teacher[idx], device=logits.device)
                        )
                        cost = self._spike_cost(rates, loads, logits)
                        loss = self._distillation(logits, target, soft) + self.rate_l1 * cost
                        opt.zero_grad()
                        (loss if world == 1 else loss * weight).backward()
                        opt.step()
                        sched.step()
                        if weight > 0:
                            sums["loss"] += float(loss.detach()) * len(idx)
                            sums["train_accuracy"] += float((logits.argmax(1) == target).sum())
                            sums["spike_cost"] += float(cost.detach()) * len(idx)
                    totals = _add_in_rank_order(distributed.gather_rows({distributed.rank(): sums}))
                    history.append({"epoch": epoch + 1} | {k: v / len(x) for k, v in totals.items()})
                    bar.advance()
            trained = sim.read_params(snn.net, keys)
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


def surrogate_module(sim, graph: Graph, keys: list[str], timesteps: int):
    """The event-driven SNN of ``graph`` as an ``nn.Module`` (what ``DistributedDataParallel`` wraps):
    ``forward(x)`` is the simulator's differentiable surrogate run over ``timesteps`` steps and returns
    ``(logits, rates)``; its submodule ``net`` holds the parameters, of which exactly ``keys``
    require gradients.  (A factory: ``import snnc`` does not import torch.)"""
    from torch import nn

    class SurrogateSNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = sim.trainable(graph, keys)

        def forward(self, x):
            return sim.surrogate_run(self.net, x, timesteps)

    return SurrogateSNN()


def _teacher_logits(sim, teacher: Graph, x, timesteps: int, batch_size: int) -> np.ndarray:
    """The teacher's logits on every sample (N, C).  Under torchrun each rank runs its batches
    (snnc.distributed.my_batches) and the rows are gathered, so no rank simulates the whole set."""
    if not distributed.active():
        return sim.run_snn(teacher, x, timesteps).logits.astype(np.float32)
    rows = {i: sim.run_snn(teacher, xb, timesteps).logits.astype(np.float32)
            for i, xb, _ in distributed.my_batches(x, None, batch_size)}
    return np.concatenate(distributed.gather_rows(rows))


def _add_in_rank_order(parts: list[dict[str, float]]) -> dict[str, float]:
    """The ranks' sums added in rank order (the same floats on every rank; one process: its own)."""
    total = dict(parts[0])
    for part in parts[1:]:
        for k, v in part.items():
            total[k] += v
    return total

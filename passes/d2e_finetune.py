"""d2e-finetune: a short fine-tune of the event-coded SNN, distilled from its direct-coded teacher.

Trains the weights and biases of every synaptic layer (thresholds, leaks and the encoder stay
as they are) for ``epochs`` passes over the labelled calibration data, with the event-driven
forward of the simulator (the graph's own encoder, spikes made differentiable by a
straight-through surrogate), Adam at ``lr`` with a cosine schedule, and the loss

    α·CE(z_s, y) + (1 − α)·τ²·KL(softmax(z_t/τ) ‖ softmax(z_s/τ)) + λ·r

where z_s are the student's logits (the readout's mean over T), z_t the frozen direct-coded
teacher's (the graph d2e-encode kept, run once at the same T), α = ``kd-alpha``,
τ = ``temperature`` and r the mean firing rate of all neurons (spikes per neuron and step,
every neuron counted once), weighted by λ = ``rate-l1``: an L1 penalty on spikes, which are
non-negative.  This is self-distillation from the direct-coded teacher (the better
documented D2E variant, research notes §1), with the spike-rate regularisation of snnc's
four-step design.  A progress bar counts epochs.

Deterministic for a given ``seed`` (the batch order) on a given machine and thread count:
nothing else is random (a rate encoder draws from its own seeded generator).
Changes: the weight and bias tensors of the synaptic layers (new arrays under the same keys).
Preserves: the structure, the neurons and the encoders.  Reports the loss, the running
training accuracy and the firing rate of every epoch.
Requires: labelled calibration data (``y``), a simulator that can train, and d2e-encode
earlier in the pipeline (for the teacher) unless ``kd-alpha`` = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from snnc.passes._conversion import require_neurons
from snnc.passes.d2e_encode import network_neurons, teacher_of, timesteps_of

from snnc.errors import PassError
from snnc.ir import Graph, Node
from snnc.pass_manager import Pass, PassContext, register_pass

TRAINED_ROLES = ("weight", "bias")


def trainable_keys(graph: Graph) -> list[str]:
    """Store keys of the weights and biases of the synaptic layers, in graph order, once each."""
    keys: list[str] = []
    for node in graph.nodes:
        if node.op.synaptic:
            keys += [node.params[r] for r in TRAINED_ROLES if r in node.params and node.params[r] not in keys]
    return keys


@register_pass
@dataclass(frozen=True)
class D2EFinetune(Pass):
    name: ClassVar[str] = "d2e-finetune"
    epochs: int = 20
    lr: float = 1e-3
    rate_l1: float = 0.0
    kd_alpha: float = 0.4
    temperature: float = 4.0
    seed: int = 0
    batch_size: int = 64

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        self._check_options()
        data = ctx.require_calibration(self.name, labelled=True)
        sim = ctx.require_simulator(self.name)
        require_neurons(graph, self.name)
        layers = network_neurons(graph)
        timesteps = timesteps_of(ctx, graph)
        keys = trainable_keys(graph)
        if not keys:
            raise PassError("d2e-finetune: the graph has no weights or biases to train")
        x = np.asarray(data.x, dtype=np.float32)
        y = np.asarray(data.y, dtype=np.int64)
        if len(x) == 0:
            raise PassError("d2e-finetune: the calibration data is empty")
        teacher = None
        if self.kd_alpha < 1.0:
            teacher = sim.run_snn(teacher_of(graph, self.name), x, timesteps).logits.astype(np.float32)
        history = self._train(ctx, graph, sim, layers, keys, x, y, teacher, timesteps)
        ctx.results[self.name] = {"epochs": self.epochs, "trained_tensors": len(keys), "history": history}

    def _check_options(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs={self.epochs} must be >= 1")
        if not self.lr > 0:
            problems.append(f"lr={self.lr} must be > 0")
        if not 0.0 <= self.kd_alpha <= 1.0:
            problems.append(f"kd-alpha={self.kd_alpha} must be in [0, 1]")
        if not self.temperature > 0:
            problems.append(f"temperature={self.temperature} must be > 0")
        if self.rate_l1 < 0:
            problems.append(f"rate-l1={self.rate_l1} must be >= 0")
        if self.batch_size < 1:
            problems.append(f"batch-size={self.batch_size} must be >= 1")
        if problems:
            raise PassError("d2e-finetune: " + "; ".join(problems))

    def _train(
        self, ctx, graph, sim, layers: list[Node], keys, x, y, teacher, timesteps
    ) -> list[dict[str, Any]]:
        import torch
        import torch.nn.functional as F

        sizes = {n.name: float(n.type.numel) for n in layers if n.type is not None}
        total = sum(sizes.values())
        rng = np.random.default_rng(self.seed)
        steps = self.epochs * math.ceil(len(x) / self.batch_size)
        history: list[dict[str, Any]] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            module = sim.trainable(graph, keys)
            params = [p for p in module.parameters() if p.requires_grad]
            opt = torch.optim.Adam(params, lr=self.lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
            tau, alpha = self.temperature, self.kd_alpha
            with ctx.track(self.name, self.epochs) as bar:
                for epoch in range(self.epochs):
                    loss_sum, correct, rate_sum, seen = 0.0, 0, 0.0, 0
                    order = rng.permutation(len(x))
                    for start in range(0, len(x), self.batch_size):
                        idx = order[start : start + self.batch_size]
                        logits, rates = sim.surrogate_run(module, x[idx], timesteps)
                        target = torch.as_tensor(y[idx], device=logits.device)
                        loss = alpha * F.cross_entropy(logits, target)
                        if teacher is not None:
                            soft = torch.as_tensor(teacher[idx], device=logits.device) / tau
                            kl = F.kl_div(
                                F.log_softmax(logits / tau, 1),
                                F.log_softmax(soft, 1),
                                log_target=True,
                                reduction="batchmean",
                            )
                            loss = loss + (1.0 - alpha) * tau * tau * kl
                        rate = (
                            sum(rates[n] * sizes[n] for n in sizes) / total if total else logits.new_zeros(())
                        )
                        loss = loss + self.rate_l1 * rate
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                        sched.step()
                        loss_sum += float(loss.detach()) * len(idx)
                        correct += int((logits.argmax(1) == target).sum())
                        rate_sum += float(rate.detach()) * len(idx)
                        seen += len(idx)
                    history.append(
                        {
                            "epoch": epoch + 1,
                            "loss": loss_sum / seen,
                            "train_accuracy": correct / seen,
                            "firing_rate": rate_sum / seen,
                        }
                    )
                    bar.advance()
            trained = sim.read_params(module, keys)
        for key, value in trained.items():
            graph.params[key] = value
        graph.infer_types()
        return history

"""Direct-coded SNNs on the scikit-learn digits, written as snnTorch, SpikingJelly and Norse users write them.

Every factory returns a model whose ``forward(x)`` is ONE timestep: it takes the analog image batch
(N, 1, 8, 8) (direct coding: the same image at every step) and returns that step's output, with the
neuron state kept inside the neuron modules.  That is the form snnc imports
(``snnc compile snntorch_mlp_t4.pt --arch examples/direct_snn/models.py:snntorch_mlp``).  ``run_steps``
runs a model for T steps the way its library does (resetting the state first); the prediction is the
argmax of the mean output over the steps.

The libraries are imported inside the factories, so that loading one factory imports one library.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NUM_CLASSES = 10


# ---------------------------------------------------------------------------------------
# snnTorch: nn.Modules of Leaky neurons with init_hidden=True; the output layer is read by its membrane.


class SnnTorchMLP(nn.Module):
    """64 -> 128 -> 64 -> 10, Leaky (β = 0.9, reset by subtraction one step late, snnTorch's default);
    returns the membrane of the output Leaky."""

    def __init__(self) -> None:
        super().__init__()
        import snntorch as snn

        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(64, 128)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
        self.fc2 = nn.Linear(128, 64)
        self.lif2 = snn.Leaky(beta=0.9, init_hidden=True)
        self.fc3 = nn.Linear(64, NUM_CLASSES)
        self.lif3 = snn.Leaky(beta=0.9, init_hidden=True, output=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spk = self.lif1(self.fc1(self.flat(x)))
        spk = self.lif2(self.fc2(spk))
        _, mem = self.lif3(self.fc3(spk))
        return mem


def snntorch_mlp() -> nn.Module:
    return SnnTorchMLP()


def snntorch_cnn() -> nn.Sequential:
    """snnTorch's tutorial CNN on 8x8: Conv(1→12)·MaxPool·Leaky·Conv(12→32)·MaxPool·Leaky·Linear·Leaky,
    zero reset in the hidden layers, and an output Leaky without reset whose membrane is the output."""
    import snntorch as snn

    return nn.Sequential(
        nn.Conv2d(1, 12, 3, padding=1),
        nn.MaxPool2d(2),
        snn.Leaky(beta=0.8, init_hidden=True, reset_mechanism="zero"),
        nn.Conv2d(12, 32, 3, padding=1),
        nn.MaxPool2d(2),
        snn.Leaky(beta=0.8, init_hidden=True, reset_mechanism="zero"),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, NUM_CLASSES),
        _MembraneOf(snn.Leaky(beta=0.8, init_hidden=True, reset_mechanism="none", output=True)),
    )


class _MembraneOf(nn.Module):
    """Calls a Leaky with output=True and returns its membrane (what an nn.Sequential cannot say)."""

    def __init__(self, lif: nn.Module) -> None:
        super().__init__()
        self.lif = lif

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(x)[1]


# ---------------------------------------------------------------------------------------
# SpikingJelly (activation_based): the MLP in single-step mode (called once per step, output = spikes,
# read as firing rates), the CNN in multi-step mode (fed [T, N, ...]; read by its linear output).


def spikingjelly_mlp() -> nn.Sequential:
    """SpikingJelly's first tutorial network: Flatten·Linear(64→128)·LIFNode·Linear(128→10)·LIFNode
    (τ = 2, hard reset to 0, ATan surrogate), single-step."""
    from spikingjelly.activation_based import layer, neuron, surrogate

    return nn.Sequential(
        layer.Flatten(),
        layer.Linear(64, 128),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
        layer.Linear(128, NUM_CLASSES),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
    )


def spikingjelly_cnn() -> nn.Sequential:
    """Conv(1→16)·BN·ParametricLIF·MaxPool·Conv(16→32)·BN·ParametricLIF·MaxPool·Flatten·Linear(128→10),
    PLIF with learned τ and reset by subtraction, multi-step ([T, N, 1, 8, 8] in, [T, N, 10] out)."""
    from spikingjelly.activation_based import layer, neuron, surrogate

    def plif() -> nn.Module:
        return neuron.ParametricLIFNode(init_tau=2.0, v_reset=None, surrogate_function=surrogate.ATan(),
                                        step_mode="m")

    return nn.Sequential(
        layer.Conv2d(1, 16, 3, padding=1, bias=False, step_mode="m"),
        layer.BatchNorm2d(16, step_mode="m"),
        plif(),
        layer.MaxPool2d(2, step_mode="m"),
        layer.Conv2d(16, 32, 3, padding=1, bias=False, step_mode="m"),
        layer.BatchNorm2d(32, step_mode="m"),
        plif(),
        layer.MaxPool2d(2, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(32 * 2 * 2, NUM_CLASSES, step_mode="m"),
    )


# ---------------------------------------------------------------------------------------
# Norse: a SequentialState of cells (forward(x, state=None) -> (output, state)), read by its linear output.


def norse_mlp() -> nn.Module:
    """Flatten·Linear(64→128)·LIFCell·Linear(128→64)·LIFBoxCell·Linear(64→10); dt = 1 ms,
    τ_mem = 1/300 s, τ_syn = 1/400 s (faster than Norse's defaults, so that 4 steps carry information)."""
    import norse.torch as norse

    lif = norse.LIFParameters(tau_syn_inv=torch.tensor(400.0), tau_mem_inv=torch.tensor(300.0))
    box = norse.LIFBoxParameters(tau_mem_inv=torch.tensor(300.0))
    return norse.SequentialState(
        nn.Flatten(),
        nn.Linear(64, 128),
        norse.LIFCell(lif),
        nn.Linear(128, 64),
        norse.LIFBoxCell(box),
        nn.Linear(64, NUM_CLASSES),
    )


# ---------------------------------------------------------------------------------------
# running a model over time, as its library does


def _run_snntorch(model: nn.Module, x: torch.Tensor, timesteps: int) -> list[torch.Tensor]:
    import snntorch as snn

    for m in model.modules():  # utils.reset(model) looks at direct children only
        if isinstance(m, snn.SpikingNeuron):
            m.reset_mem()
    return [model(x) for _ in range(timesteps)]


def _run_spikingjelly(model: nn.Module, x: torch.Tensor, timesteps: int) -> list[torch.Tensor]:
    from spikingjelly.activation_based import functional

    functional.reset_net(model)
    if any(getattr(m, "step_mode", "s") == "m" for m in model.modules()):
        return list(model(x.unsqueeze(0).repeat(timesteps, *([1] * x.dim()))))
    return [model(x) for _ in range(timesteps)]


def _run_norse(model: nn.Module, x: torch.Tensor, timesteps: int) -> list[torch.Tensor]:
    state, outputs = None, []
    for _ in range(timesteps):
        out, state = model(x, state)
        outputs.append(out)
    return outputs


# name -> (factory, runner)
ARCHITECTURES: dict[str, tuple[Callable[[], nn.Module], Callable[..., list[torch.Tensor]]]] = {
    "snntorch_mlp": (snntorch_mlp, _run_snntorch),
    "snntorch_cnn": (snntorch_cnn, _run_snntorch),
    "spikingjelly_mlp": (spikingjelly_mlp, _run_spikingjelly),
    "spikingjelly_cnn": (spikingjelly_cnn, _run_spikingjelly),
    "norse_mlp": (norse_mlp, _run_norse),
}


def run_steps(name: str, model: nn.Module, x: torch.Tensor, timesteps: int) -> list[torch.Tensor]:
    """The per-step outputs of architecture ``name`` on the direct-coded input ``x`` over T steps."""
    return ARCHITECTURES[name][1](model, x, timesteps)


def logits(name: str, model: nn.Module, x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """The mean output over T steps: what the prediction (argmax) reads."""
    return torch.stack(run_steps(name, model, x, timesteps)).mean(dim=0)

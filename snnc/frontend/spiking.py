"""Spiking modules in source models -> ``neuron`` ops (the whole-model import of a direct-coded SNN
is :mod:`snnc.frontend.snn`, which builds on this module and :mod:`snnc.frontend.fx`).

How a direct-coded SNN maps onto snnc (examples/direct_snn/README.md says it for users):

* The snnc graph is ONE timestep of the network; the simulator runs it T times with the same
  analog input (direct coding) and a ``readout`` that accumulates the output over time.
* So the model's ``forward(x)`` must compute one step from the analog input [N, ...], with the
  neuron state kept inside the neuron modules, as the libraries' own per-step idioms do:
  snnTorch ``spk = self.lif(cur)`` (``init_hidden=True``, or no ``mem`` argument: snnTorch then
  keeps ``mem`` in the module); SpikingJelly single-step modules (multi-step models, fed
  [T, N, ...], are imported in single-step mode: same parameters, same dynamics); Norse cells
  called with the state they returned, inside ``SequentialState`` or a
  ``forward(x, state=None)``.  A forward that returns a tuple (Norse's ``(output, state)``)
  is read as its first element.  A neuron module may be called once per step.
* What forward returns is what the readout accumulates: a neuron's spikes (spike count), its
  membrane (snnTorch ``spk, mem = self.lif_out(cur); return mem``) or an analog value such
  as a final linear layer's output (mean current).

Built-in mappings (registered the first time a module of the library is met, so that
``import snnc`` never imports the libraries): snnTorch ``Leaky``, ``Synaptic``;
SpikingJelly ``IFNode``, ``LIFNode``, ``ParametricLIFNode``; Norse ``LIFCell``,
``LIFBoxCell``.  Each maps the library's float operations one for one (see the ``Neuron``
op), so the imported graph simulates spike for spike as the library runs.  Other classes
that look like neurons get an UnsupportedError that says how to register a mapping with
:func:`register_neuron_mapping`.

Library functions between neurons: SpikingJelly SEW-ResNet's connect function ``sew_function``
(ADD -> ``add``, AND -> ``mul``, IAND -> ``mul{complement}``), kept whole by the tracer
(:func:`spiking_functions`) and lowered by :func:`lower_spiking_function`; with it the zoo models
``spiking_resnet18``, ``sew_resnet18`` and ``spiking_vgg11(_bn)`` of ``spikingjelly.activation_based.model``
import unmodified (tests/test_spikingjelly_zoo.py, docs/direct_to_event.md; the deeper variants are made
of the same blocks, untested).
"""

from __future__ import annotations

import dataclasses
import operator
import re
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from snnc.errors import UnsupportedError
from snnc.ir import ops as O

NeuronMapping = Callable[[nn.Module], tuple[O.Neuron, dict[str, np.ndarray]]]
MembraneIndex = int | Callable[[nn.Module], int] | None

PER_STEP_HINT = (
    "snnc imports a direct-coded SNN as one timestep: forward(x) computes one step from the analog input, "
    "the neuron state stays inside the neuron modules (see examples/direct_snn/README.md)"
)


@dataclass(frozen=True)
class _Entry:
    fn: NeuronMapping
    membrane: MembraneIndex  # where the membrane is in the module's output tuple (spikes: index 0)
    exact: bool  # built-in: this very class only (a subclass may change the dynamics)


NEURON_MAPPINGS: dict[type, _Entry] = {}


def register_neuron_mapping(cls: type, *, membrane_index: MembraneIndex = None
                            ) -> Callable[[NeuronMapping], NeuronMapping]:
    """Decorator: map the neuron class ``cls`` (and its subclasses) to a ``neuron`` op.

    ``@register_neuron_mapping(MyLIF) def f(m): return Neuron(model=NeuronModel.LIF, ...), {}``.
    The function returns the op and per-channel parameters ``{role: array}`` for the roles
    ``v_th``, ``beta``, ``out_scale`` (one value per channel, or the library's broadcast
    layout such as [C, 1, 1]; the op's scalar attribute multiplies them, so set it to 1.0).
    When the module returns a tuple, index 0 must be the spikes; ``membrane_index`` says
    where the membrane potential is, if the model may read it.
    """

    def decorate(fn: NeuronMapping) -> NeuronMapping:
        NEURON_MAPPINGS[cls] = _Entry(fn, membrane_index, exact=False)
        return fn

    return decorate


def _register_builtin(cls: type, fn: NeuronMapping, membrane: MembraneIndex = None) -> None:
    if cls not in NEURON_MAPPINGS:  # a user's registration wins
        NEURON_MAPPINGS[cls] = _Entry(fn, membrane, exact=True)


# ---------------------------------------------------------------------------------------
# lookup


_LIBRARIES = ("snntorch", "spikingjelly", "norse")
_registered_libraries: set[str] = set()


def _library_of(module: nn.Module) -> str | None:
    top = type(module).__module__.split(".", 1)[0]
    return top if top in _LIBRARIES else None


def _ensure_builtins(module: nn.Module) -> None:
    """Register a library's mappings the first time one of its modules is met (it is imported then)."""
    lib = _library_of(module)
    if lib is None or lib in _registered_libraries:
        return
    _registered_libraries.add(lib)
    {"snntorch": _register_snntorch, "spikingjelly": _register_spikingjelly, "norse": _register_norse}[lib]()


def _entry_for(module: nn.Module) -> _Entry | None:
    _ensure_builtins(module)
    for cls in type(module).__mro__:
        entry = NEURON_MAPPINGS.get(cls)
        if entry is not None and (cls is type(module) or not entry.exact):
            return entry
    return None


def is_spiking_module(module: nn.Module) -> bool:
    """Whether the fx tracer keeps ``module`` whole: a mapped neuron, a library's stateless
    wrapper of a torch layer, or something neuron-like (whose lowering then explains the error)."""
    return _entry_for(module) is not None or _is_stateless_wrapper(module) or looks_like_neuron(module)


def neuron_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (path, module) pairs of ``module``'s neurons that have a mapping, in definition order."""
    return [(path, m) for path, m in module.named_modules() if _entry_for(m) is not None]


def is_snn(module: nn.Module) -> bool:
    """Whether ``module`` contains spiking neurons (mapped or neuron-like)."""
    return any(_entry_for(m) is not None or looks_like_neuron(m) for m in module.modules())


_NEURON_NAME = re.compile(r"Leaky|Synaptic|Lapicque|Alpha|LIF|IF|Neuron|Node|Cell|Spik")


def looks_like_neuron(module: nn.Module) -> bool:
    """A module that keeps state between calls, or a neuron class of snnTorch/SpikingJelly/Norse."""
    if _entry_for(module) is not None or _is_stateless_wrapper(module):
        return False
    lib = _library_of(module)
    if lib == "snntorch" and isinstance(module, sys.modules["snntorch"].SpikingNeuron):
        return True
    if lib == "spikingjelly":
        from spikingjelly.activation_based import base

        if isinstance(module, base.MemoryModule):  # SpikingJelly's stateful modules
            return True
    if lib == "norse":
        from norse.torch.module.snn import SNN, SNNCell, SNNRecurrent, SNNRecurrentCell

        if isinstance(module, (SNN, SNNCell, SNNRecurrent, SNNRecurrentCell)):
            return True
    if list(module.children()):
        return False
    if lib is not None and _NEURON_NAME.search(type(module).__name__):
        return True
    # a leaf module with state outside its state dict (snnTorch-like hidden buffers, SpikingJelly memories)
    return bool(getattr(module, "_non_persistent_buffers_set", ())) or hasattr(module, "_memories")


def _unknown_neuron(module: nn.Module, path: str) -> UnsupportedError:
    cls = type(module)
    name = f"{cls.__module__}.{cls.__qualname__}"
    known = [c for c in cls.__mro__[1:] if c in NEURON_MAPPINGS]
    derived = f" (it derives from {known[0].__qualname__}, whose mapping covers that class only)" if known else ""
    return UnsupportedError(
        f"no neuron mapping for {name} at '{path}'{derived}; snnc maps snnTorch Leaky/Synaptic, SpikingJelly "
        "IFNode/LIFNode/ParametricLIFNode and Norse LIFCell/LIFBoxCell. Register a mapping for it: "
        "`from snnc.frontend.spiking import register_neuron_mapping; from snnc.ir import ops as O` then "
        f"`@register_neuron_mapping({cls.__qualname__})` on a function `def f(m): return O.Neuron(model=..., "
        "v_th=..., reset=..., beta=...), {}` that states its dynamics (see O.Neuron's docstring)"
    )


# ---------------------------------------------------------------------------------------
# lowering one module call (called by snnc.frontend.fx for modules it has no rule for)


def lower_spiking_module(builder: Any, node: Any, module: nn.Module, path: str, x: str | None) -> bool:
    """Emit a ``neuron`` node (or the op of a stateless wrapper) for ``module``; False if unknown.

    Resolves the module's tuple outputs here: ``getitem`` users of the call are folded into
    the neuron's value, and the neuron emits what they read (spikes or membrane).
    """
    if x is None:
        return False  # called without an input: not a layer snnc maps
    stateless = _stateless_op(module)
    if stateless is not None:
        builder.emit(node, stateless, [x])
        return True
    entry = _entry_for(module)
    if entry is None:
        if looks_like_neuron(module):
            raise _unknown_neuron(module, path)
        return False
    _check_per_step_call(node, path)
    op, tensors = entry.fn(module)
    if _resolve_outputs(node, module, entry, path) is O.Emit.MEMBRANE:
        op = dataclasses.replace(op, emit=O.Emit.MEMBRANE)
    shape = builder.graph.value_type(x).shape
    params = {}
    for role, value in tensors.items():
        vector = _per_channel(np.asarray(value, dtype=np.float32), shape, role, path)
        params[role] = builder.param(f"{path}.{role}", torch.from_numpy(vector))
    builder.emit(node, op, [x], params)
    return True


def check_neuron_calls(fx_graph: Any, modules: dict[str, nn.Module]) -> None:
    """Refuse a traced forward whose neuron modules are not called once per step (a time loop,
    explicit neuron state)."""
    for node in fx_graph.nodes:
        if node.op == "call_module" and _entry_for(modules[node.target]) is not None:
            _check_per_step_call(node, str(node.target))


def _check_per_step_call(node: Any, path: str) -> None:
    calls = sum(1 for n in node.graph.nodes if n.op == "call_module" and n.target == node.target)
    if calls > 1:
        raise UnsupportedError(
            f"'{path}' is called {calls} times in one forward (a time loop inside forward?); {PER_STEP_HINT}"
        )
    extra = [a for a in list(node.args[1:]) + list(node.kwargs.values()) if _is_fx_node(a)]
    if extra:
        raise UnsupportedError(
            f"'{path}' is given its state explicitly ({', '.join(str(a) for a in extra)}); {PER_STEP_HINT}: "
            "call it with the input only (snnTorch: init_hidden=True or no mem argument)"
        )


def _is_fx_node(value: Any) -> bool:
    import torch.fx as fx

    return isinstance(value, fx.Node)


def _resolve_outputs(node: Any, module: nn.Module, entry: _Entry, path: str) -> O.Emit:
    """Which output of the module the model reads; folds ``getitem`` users into ``node``."""
    read: set[int] = set()
    meta = node.meta.get("tensor_meta")  # from shape propagation: a tuple for tuple outputs
    if not isinstance(meta, (tuple, list)):
        return O.Emit.SPIKES  # a tensor: its users (indexing included) read the spikes themselves
    size = len(meta)
    for user in list(node.users):
        if user.op == "call_function" and user.target is operator.getitem:
            if user.users:
                index = user.args[1]
                if not isinstance(index, int) or not -size <= index < size:
                    raise UnsupportedError(f"the model reads [{index}] of the output of '{path}'")
                read.add(index % size)
                user.replace_all_uses_with(node)
            node.graph.erase_node(user)  # an unread getitem (e.g. a Norse state nobody keeps) goes too
        else:
            read.add(0)  # the value itself: spikes, or a tuple read as its first element
    if read <= {0}:
        return O.Emit.SPIKES
    membrane = entry.membrane(module) if callable(entry.membrane) else entry.membrane
    if read == {membrane}:
        return O.Emit.MEMBRANE
    what = "its spikes (output 0)" + (f" or its membrane (output {membrane})" if membrane is not None else "")
    raise UnsupportedError(
        f"the model reads output(s) {sorted(read)} of '{path}' ({type(module).__name__}); snnc maps {what}, "
        "one of them per neuron"
    )


def _per_channel(value: np.ndarray, shape: tuple[int, ...], role: str, path: str) -> np.ndarray:
    """A parameter in the library's broadcast layout ([C], [C,1,1], ...) as one value per channel."""
    rank = len(shape) + 1  # with the batch dimension
    if value.ndim > rank:
        raise UnsupportedError(f"'{path}': {role} has shape {list(value.shape)}, input is {list(shape)}")
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    varying = [d for d in range(rank) if full.shape[d] != 1]
    if not varying:
        return full.reshape(1)
    if varying == [1] and full.shape[1] == shape[0]:
        return full.reshape(-1)
    raise UnsupportedError(
        f"'{path}': {role} of shape {list(value.shape)} varies per neuron over the input {list(shape)}; "
        "snnc neurons take a scalar or one value per channel"
    )


def _values(t: Any) -> np.ndarray:
    """A library parameter (tensor or number) as float32 values, exactly as the library stores them."""
    return torch.as_tensor(t).detach().to(torch.float32).cpu().numpy()


def _scalar_or_param(values: np.ndarray, role: str, params: dict[str, np.ndarray]) -> float:
    """The attribute value for ``role``: the scalar itself, or 1.0 with the values as a parameter."""
    if values.size == 1:
        return float(values.reshape(()))
    params[role] = values
    return 1.0


def _scalar(values: np.ndarray, what: str, cls: str) -> float:
    if values.size != 1:
        raise UnsupportedError(f"{cls}: {what} must be a single value, got shape {list(values.shape)}")
    return float(values.reshape(-1)[0])


# ---------------------------------------------------------------------------------------
# library functions between neurons (called by snnc.frontend.fx for calls it has no rule for)
#
# SpikingJelly's SEW-ResNet joins a block's spikes to its identity's with sew_function(x, y, cnf)
# (activation_based/model/sew_resnet.py): ADD x + y, AND x·y, IAND x·(1 − y).  The tracer keeps the
# call whole (fx's autowrap: the products would otherwise reach the frontend as a product of two
# activations, which it refuses for ANNs) and the lowering emits add / mul with the library's
# operands in the library's order.


def _sew_function() -> Callable[..., Any] | None:
    module = sys.modules.get("spikingjelly.activation_based.model.sew_resnet")  # only if the model could use it
    return None if module is None else module.sew_function


def spiking_functions() -> tuple[Callable[..., Any], ...]:
    """The library functions the tracer keeps as single calls (those of libraries already imported)."""
    fn = _sew_function()
    return () if fn is None else (fn,)


def lower_spiking_function(builder: Any, node: Any) -> bool:
    """Emit the op of a call to a function of :func:`spiking_functions`; False for any other call."""
    fn = _sew_function()
    if fn is None or node.target is not fn:
        return False
    args = list(node.args) + [node.kwargs[k] for k in ("x", "y", "cnf")[len(node.args):] if k in node.kwargs]
    if len(args) != 3 or not isinstance(args[2], str):
        raise UnsupportedError(f"sew_function called with {node.args}, {node.kwargs}: expected (x, y, cnf)")
    x, y, cnf = args
    ops: dict[str, O.Op] = {"ADD": O.Add(), "AND": O.Mul(), "IAND": O.Mul(complement=True)}
    if cnf not in ops:
        raise UnsupportedError(f"SEW connect function cnf={cnf!r}: snnc maps ADD, AND and IAND")
    builder.emit(node, ops[cnf], [builder.value(x, node), builder.value(y, node)])
    return True


# ---------------------------------------------------------------------------------------
# stateless wrappers of torch layers (SpikingJelly's step-mode layers)


def _is_stateless_wrapper(module: nn.Module) -> bool:
    if _library_of(module) != "spikingjelly":
        return False
    from spikingjelly.activation_based import layer

    return type(module) in (
        layer.Linear, layer.Conv1d, layer.Conv2d, layer.BatchNorm1d, layer.BatchNorm2d, layer.MaxPool2d,
        layer.AvgPool2d, layer.AdaptiveAvgPool2d, layer.Flatten, layer.Dropout, layer.Dropout2d,
    )


def _stateless_op(module: nn.Module) -> O.Op | None:
    """The op of a wrapper that snnc.frontend.fx has no rule for (its torch base class has one)."""
    if _library_of(module) != "spikingjelly":
        return None
    from spikingjelly.activation_based import layer

    if type(module) in (layer.Dropout, layer.Dropout2d):  # identity at inference
        p: Any = module.p
        return O.Dropout(p=float(p))
    return None


# ---------------------------------------------------------------------------------------
# snnTorch 1.0 (snntorch/_neurons/leaky.py, synaptic.py, neurons.py)
#
# Leaky.forward: reset = H(mem − thr) of the stored mem; mem = clamp(β,0,1)·mem + I − reset·thr
# (subtract) or clamp(β,0,1)·(1 − reset)·mem + I (zero); spk = H(mem − thr)·graded_spikes_factor,
# H(x) = 1[x > 0] for every surrogate.  With reset_delay (the default) that is a reset one step
# late.  Without it, mem −= (spk − reset)·thr after firing: a reset at once, plus, for subtraction,
# the reset read from the already reset mem (snnc's ``presubtract``).  Zero reset one step late is
# the same spike train as a hard reset at once (β·0 + I = I), which is how it is mapped.


def _snntorch_reset(m: Any) -> O.Reset:
    return (O.Reset.SOFT, O.Reset.HARD, O.Reset.NONE)[int(m.reset_mechanism_val)]


def _snntorch_check(m: Any) -> None:
    name = type(m).__name__
    if m.inhibition:
        raise UnsupportedError(f"snnTorch {name} with inhibition=True (winner-take-all across the batch)")
    if m.state_quant:
        raise UnsupportedError(f"snnTorch {name} with state_quant (quantised membrane) has no snnc mapping")


def _snntorch_leaky(m: Any) -> tuple[O.Neuron, dict[str, np.ndarray]]:
    _snntorch_check(m)
    reset = _snntorch_reset(m)
    params: dict[str, np.ndarray] = {}
    op = O.Neuron(
        model=O.NeuronModel.LIF,
        v_th=_scalar_or_param(_values(m.threshold), "v_th", params),
        reset=reset,
        beta=_scalar_or_param(np.clip(_values(m.beta), 0.0, 1.0), "beta", params),
        strict=True,
        reset_delay=bool(m.reset_delay) and reset is O.Reset.SOFT,
        presubtract=not m.reset_delay and reset is O.Reset.SOFT,
        out_scale=_scalar_or_param(_values(m.graded_spikes_factor), "out_scale", params),
    )
    return op, params


def _snntorch_leaky_membrane(m: Any) -> int:
    if m.reset_delay and _snntorch_reset(m) is O.Reset.HARD:
        raise UnsupportedError(
            "the model reads the membrane of an snnTorch Leaky with reset_mechanism='zero' and reset_delay=True; "
            "its spikes map exactly (as a hard reset at once) but its membrane keeps the pre-reset value for a "
            "step, which snnc's neuron does not emit: read the spikes, or use reset_delay=False"
        )
    return 1


def _snntorch_synaptic(m: Any) -> tuple[O.Neuron, dict[str, np.ndarray]]:
    """syn = clamp(α,0,1)·syn + I; mem = clamp(β,0,1)·mem + syn, reset as Leaky, except that a
    delayed zero reset sets the new mem (not the old one) to 0: snnc's hard reset_delay."""
    _snntorch_check(m)
    reset = _snntorch_reset(m)
    params: dict[str, np.ndarray] = {}
    op = O.Neuron(
        model=O.NeuronModel.CUBA,
        v_th=_scalar_or_param(_values(m.threshold), "v_th", params),
        reset=reset,
        beta=_scalar_or_param(np.clip(_values(m.beta), 0.0, 1.0), "beta", params),
        alpha=_scalar(np.clip(_values(m.alpha), 0.0, 1.0), "alpha", "snnTorch Synaptic"),
        strict=True,
        reset_delay=bool(m.reset_delay) and reset is not O.Reset.NONE,
        presubtract=not m.reset_delay and reset is O.Reset.SOFT,
        out_scale=_scalar_or_param(_values(m.graded_spikes_factor), "out_scale", params),
    )
    return op, params


def _register_snntorch() -> None:
    import snntorch

    _register_builtin(snntorch.Leaky, _snntorch_leaky, _snntorch_leaky_membrane)
    _register_builtin(snntorch.Synaptic, _snntorch_synaptic, 2)  # (spk, syn, mem)


# ---------------------------------------------------------------------------------------
# SpikingJelly 2.0 (activation_based/neuron/*.py, _ops/{if_,lif,plif}/cpu.py)
#
# IF: h = v + x;  LIF: h = v + (x − (v − v_r))/τ (decay_input) or v − (v − v_r)/τ + x;
# ParametricLIF: the same with ·sigmoid(w) for /τ.  spike = 1[h ≥ v_th] (every spiking surrogate);
# v_reset = None: v = h − spike·v_th, v_r = 0, v[0] = 0; else v = v_reset where spike, v_r = v[0] = v_reset.


def _spikingjelly_common(m: Any) -> dict[str, Any]:
    name = type(m).__name__
    if not getattr(m.surrogate_function, "spiking", True):
        raise UnsupportedError(f"SpikingJelly {name} with a non-spiking surrogate_function (it outputs analog values)")
    v_th = float(m.v_threshold)
    if m.v_reset is None:
        return {"v_th": v_th, "reset": O.Reset.SOFT}
    return {"v_th": v_th, "reset": O.Reset.HARD, "v_reset": float(m.v_reset), "v_init": float(m.v_reset) / v_th}


def _spikingjelly_if(m: Any) -> tuple[O.Neuron, dict[str, np.ndarray]]:
    return O.Neuron(model=O.NeuronModel.IF, **_spikingjelly_common(m)), {}


def _spikingjelly_lif(m: Any) -> tuple[O.Neuron, dict[str, np.ndarray]]:
    op = O.Neuron(model=O.NeuronModel.LIF, leak=O.Leak.TAU, tau=float(m.tau), decay_input=bool(m.decay_input),
                  **_spikingjelly_common(m))
    return op, {}


def _spikingjelly_plif(m: Any) -> tuple[O.Neuron, dict[str, np.ndarray]]:
    rate = _values(m.w.detach().float().sigmoid())  # the float32 rate SpikingJelly multiplies by
    op = O.Neuron(model=O.NeuronModel.LIF, leak=O.Leak.RATE, beta=_scalar(rate, "w", "ParametricLIFNode"),
                  decay_input=bool(m.decay_input), **_spikingjelly_common(m))
    return op, {}


def _register_spikingjelly() -> None:
    from spikingjelly.activation_based import neuron

    _register_builtin(neuron.IFNode, _spikingjelly_if)
    _register_builtin(neuron.LIFNode, _spikingjelly_lif)
    _register_builtin(neuron.ParametricLIFNode, _spikingjelly_plif)


def spikingjelly_single_step(root: nn.Module) -> nn.Module:
    """Put every SpikingJelly module in single-step mode; multi-step containers become Sequentials."""
    from spikingjelly.activation_based import layer

    containers = (layer.MultiStepContainer, layer.SeqToANNContainer, layer.StepModeContainer)

    def rebuild(module: nn.Module) -> nn.Module:
        for name, child in list(module.named_children()):
            setattr(module, name, rebuild(child))
        return nn.Sequential(OrderedDict(module.named_children())) if type(module) in containers else module

    root = rebuild(root)
    for path, m in root.named_modules():
        if hasattr(m, "step_mode") and _library_of(m) == "spikingjelly" and m.step_mode != "s":
            try:
                m.step_mode = "s"
            except (ValueError, AssertionError) as e:
                raise UnsupportedError(f"'{path}' ({type(m).__name__}) works on whole sequences only ({e}); "
                                       f"{PER_STEP_HINT}") from None
    return root


# ---------------------------------------------------------------------------------------
# Norse 1.1 (norse/torch/functional/lif.py, lif_box.py)
#
# LIFCell: i = i + x;  v = v + (dt·τm⁻¹)·((v_leak − v) + i);  i = i + (−dt·τs⁻¹)·i (for the next step);
# z = 1[v − v_th > 0];  v = (1 − z)·v + z·v_reset;  v[0] = v_leak, i[0] = 0.  The input enters the
# current before the voltage update, and (v_leak − v) + i = i − (v − v_leak) exactly, so this is
# snnc's cuba neuron with the rate leak (β = dt·τm⁻¹, α = dt·τs⁻¹) when v_leak = v_reset.
# LIFBoxCell: v = v + (dt·τm⁻¹)·((x + v_leak) − v), reset to v_reset or by subtraction.


def _norse_rate(dt: float, tau_inv: Any) -> np.ndarray:
    return _values(dt * torch.as_tensor(tau_inv))  # the float32 product Norse computes each step


def _norse_common(p: Any, cls: str, params: dict[str, np.ndarray]) -> tuple[float, float]:
    """(v_th attribute, v_leak); refuses what snnc's neuron cannot express exactly."""
    v_leak = _scalar(_values(p.v_leak), "v_leak", cls)
    v_th_values = _values(p.v_th)
    if np.any(v_th_values <= 0):
        raise UnsupportedError(f"Norse {cls} with v_th <= 0 (biological units?); snnc neurons need v_th > 0")
    if v_leak != 0.0 and v_th_values.size != 1:
        raise UnsupportedError(f"Norse {cls} with a per-neuron v_th and v_leak != 0")
    return _scalar_or_param(v_th_values, "v_th", params), v_leak


def _norse_lif_cell(m: Any) -> tuple[O.Neuron, dict[str, np.ndarray]]:
    p: Any = m.p
    params: dict[str, np.ndarray] = {}
    v_th, v_leak = _norse_common(p, "LIFCell", params)
    v_reset = _scalar(_values(p.v_reset), "v_reset", "LIFCell")
    if v_leak != v_reset:
        raise UnsupportedError(f"Norse LIFCell with v_leak={v_leak} != v_reset={v_reset}: snnc's neuron leaks "
                               "towards its reset value")
    op = O.Neuron(
        model=O.NeuronModel.CUBA, leak=O.Leak.RATE, v_th=v_th, reset=O.Reset.HARD, v_reset=v_reset,
        v_init=v_leak / v_th, beta=_scalar_or_param(_norse_rate(float(m.dt), p.tau_mem_inv), "beta", params),
        alpha=_scalar(_norse_rate(float(m.dt), p.tau_syn_inv), "tau_syn_inv", "LIFCell"), strict=True,
    )
    return op, params


def _norse_lif_box_cell(m: Any) -> tuple[O.Neuron, dict[str, np.ndarray]]:
    from norse.torch.functional.reset import reset_subtract, reset_value

    p: Any = m.p
    params: dict[str, np.ndarray] = {}
    v_th, v_leak = _norse_common(p, "LIFBoxCell", params)
    if v_leak != 0.0:  # Norse computes (x + v_leak) − v, snnc x − (v − v_leak): not the same floats
        raise UnsupportedError(f"Norse LIFBoxCell with v_leak={v_leak} != 0 has no exact snnc mapping")
    if p.reset_method is reset_value:
        reset, v_reset = O.Reset.HARD, _scalar(_values(p.v_reset), "v_reset", "LIFBoxCell")
        if v_reset != 0.0:
            raise UnsupportedError(f"Norse LIFBoxCell with v_reset={v_reset} != v_leak=0")
    elif p.reset_method is reset_subtract:
        reset, v_reset = O.Reset.SOFT, 0.0
    else:
        raise UnsupportedError(f"Norse LIFBoxCell with reset_method={p.reset_method!r}")
    op = O.Neuron(model=O.NeuronModel.LIF, leak=O.Leak.RATE, v_th=v_th, reset=reset, v_reset=v_reset,
                  beta=_scalar_or_param(_norse_rate(float(m.dt), p.tau_mem_inv), "beta", params), strict=True)
    return op, params


def _register_norse() -> None:
    from norse.torch.module.lif import LIFCell
    from norse.torch.module.lif_box import LIFBoxCell

    _register_builtin(LIFCell, _norse_lif_cell)
    _register_builtin(LIFBoxCell, _norse_lif_box_cell)

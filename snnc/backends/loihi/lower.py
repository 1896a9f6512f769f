"""Lower a Loihi-quantised snnc graph to the IR-independent layer list of :mod:`.bitacc`.

What the lowering reads (the form ``loihi-legalize`` + ``loihi-quantize`` leave the graph in):

* the graph is in **integer units**: every conv2d / linear weight and bias is an integer-valued
  float (weights even, in [-256, 254]: lava-dl netx's 8-bit form; or, per output channel, such a
  mantissa times 2^e, e <= 7: the channel's synapse group runs with lava's ``weight_exp = e``, one
  group per exponent, see ``loihi-quantize{channel-exponents}``), every neuron threshold ``v_th``
  is the integer mantissa ``vth_mant`` (the chip compares ``v << 6`` with ``vth_mant << 6``), and
  the graph's voltage is the hardware voltage / 64 (a weight unit arrives as ``a << 6``);
* ``encode(direct)`` followed by ``scale{factor=Q}``: the host sends the image as graded spikes
  ``round(Q x)`` every step (``Q`` a power of two); ``encode(rate|ttfs)``: binary spikes from the host;
* ``conv2d`` / ``linear`` whose only user is a ``neuron``: one Loihi layer (synapse + CUBA LIF,
  ``du = 4096 (1 - alpha) - 1`` = 4095 for no current memory, ``dv = 4096 (1 - beta)``,
  ``bias_mant`` for lava-dl's fixed bias exponent 6);
* the last ``conv2d`` / ``linear`` before the ``readout`` (through an optional host-side ``scale``):
  a non-firing integrator layer (``vth_mant`` = 2^17 - 1, ``dv`` = 0) whose voltage the host reads at
  the last step; or a ``neuron`` read by the readout: its spike counts;
* ``flatten``, ``add`` and ``concat`` of spike values: wiring (no neurons, no latency).

Each synaptic layer delays by one step (lava's Dense/Conv send what they received the step
before), so a layer at synaptic depth ``d`` sees input ``t`` at step ``t + d``; the network runs
``T + D`` steps, ``D`` the readout layer's depth (:attr:`LoihiNet.latency`), and each layer is reset
at its depth (``snnc.backends.loihi.target``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from snnc.errors import TargetError, UserError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.ir.neuron_features import NeuronFeature, unsupported_features
from snnc.pass_manager import PassContext

from .bitacc import BIAS_MANT_MAX, BIAS_MANT_MIN, MAX_DELAY, VTH_MANT_MAX, LayerKind, LifParams, QLayer
from .calibration_run import simulate_calibration
from .fixed_point import DECAY_UNITY, NETX_BIAS_EXP

WEIGHT_MIN, WEIGHT_MAX = -256, 254
MAX_WEIGHT_EXP = 7  # lava's weight_exp: weights run as mantissa << e, e <= 7
DU_NO_CURRENT = 4095  # lava du: the synaptic current forgets everything each step (u = input)
_INTEGRAL_TOL = 1e-6
_QUANTISE_HINT = "run loihi-quantize (the ann-to-loihi pipeline does)"
# The weighted ops Loihi has synapses for.  Not the ``weighted`` trait: that includes conv1d, and lava-dl
# netx describes dense and 2-D conv layers only (loihi-legalize refuses conv1d; its SYNAPSE_OPS is this
# same set).
LOIHI_SYNAPSE_OPS: tuple[type[O.Op], ...] = (O.Conv2d, O.Linear)
# Ops whose operands' spikes are routed, with no neurons of their own, into the next synaptic layer:
# an ADD sums its operands' synapses onto the same neurons, a CONCAT stacks their channels.
_SPIKE_ROUTING: dict[type[O.Op], LayerKind] = {O.Add: LayerKind.ADD, O.Concat: LayerKind.CONCAT}


class ReadoutKind(enum.Enum):
    VOLTAGE = "voltage"  # the integrator layer's voltage at the last step
    SPIKE_COUNT = "spike_count"  # spike counts of a neuron layer


@dataclass(frozen=True, kw_only=True)
class InputCoding:
    """How the host turns a sample into the input layer's spikes.

    ``direct``: graded spikes ``clip(round(levels * x), -m, m)`` with ``m = 2^(message_bits-1) - 1``,
    every step of the presentation.  ``rate`` / ``ttfs``: binary spikes as the torch simulator
    generates them (same seeded generator).
    """

    scheme: O.Scheme
    levels: float = 0.0
    message_bits: int = 0
    seed: int = 0

    def to_json(self) -> dict:
        return {"scheme": self.scheme.value, "levels": self.levels, "message_bits": self.message_bits}


@dataclass(frozen=True)
class Readout:
    """How the host reads the logits: ``layer`` is an index into :attr:`LoihiNet.layers`.

    VOLTAGE: ``logits = v_last / 64 * scale / T`` (the layer is reset when its first input arrives,
    so it integrates the same T steps as the float model).  SPIKE_COUNT: ``logits = counts * scale / T``.
    """

    kind: ReadoutKind
    layer: int
    scale: np.ndarray = field(default_factory=lambda: np.ones(1))


@dataclass(eq=False, kw_only=True)
class LoihiNet:
    """A quantised network as the chip runs it: layers, input coding, readout, latency."""

    layers: list[QLayer]
    coding: InputCoding
    readout: Readout
    node_layer: dict[str, str] = field(default_factory=dict)  # IR node -> layer name (for reports)

    @property
    def depths(self) -> list[int]:
        """Synaptic depth of every layer: the step at which input step 0 first reaches it."""
        out: list[int] = []
        for i, layer in enumerate(self.layers):
            srcs = layer.inputs if layer.inputs else ((i - 1,) if i > 0 else ())
            base = max((out[s] for s in srcs), default=0)
            out.append(base + (1 if layer.has_neurons else 0))
        return out

    @property
    def latency(self) -> int:
        """Extra steps the chip needs so that the readout has seen all T input steps."""
        return self.depths[self.readout.layer]


# ----------------------------------------------------------------------------------------------------
# legality


def _integral(x: np.ndarray) -> bool:
    x = np.asarray(x, dtype=np.float64)
    return bool(np.all(np.isfinite(x)) and np.all(np.abs(x - np.rint(x)) <= _INTEGRAL_TOL))


def _decay(fraction: float, offset: int, what: str, where: str) -> int:
    """``fraction`` lost per step -> the 12-bit decay field; TargetError unless it is exact."""
    raw = DECAY_UNITY * float(fraction) - offset
    value = int(np.rint(raw))
    if abs(raw - value) > 1e-6 or not -offset <= value <= DECAY_UNITY - 1:
        raise TargetError(f"{where}: {what} = {fraction} is not a 12-bit Loihi decay; {_QUANTISE_HINT}")
    return value


# Loihi's neuron: current-based LIF, v > vth, hard reset to 0, one spike per step (DESIGN §5)
NEURON_SUPPORT = frozenset({
    NeuronFeature.FIRES_ABOVE_THRESHOLD, NeuronFeature.HARD_RESET, NeuronFeature.LEAK,
    NeuronFeature.CURRENT_BASED,
})
_LEGALIZE = "run loihi-legalize"
NEURON_FIXES = {
    NeuronFeature.FIRES_AT_THRESHOLD: _LEGALIZE,
    NeuronFeature.SOFT_RESET: _LEGALIZE,
    NeuronFeature.NO_RESET: _LEGALIZE,
    NeuronFeature.NONZERO_RESET: _LEGALIZE,
    NeuronFeature.PER_CHANNEL: _LEGALIZE,
    NeuronFeature.NONZERO_START: "convert with lower-neurons{v-init=0}",
    NeuronFeature.OUTPUT_SCALE: "run fold-thresholds",
}


def _neuron_problems(graph: Graph, node: Node) -> list[str]:
    op: O.Neuron = node.op  # type: ignore[assignment]
    out = unsupported_features(graph, node, NEURON_SUPPORT, "loihi", NEURON_FIXES)
    if not _integral(np.array([op.v_th])):
        out.append(f"neuron %{node.name}: threshold {op.v_th} is not an integer mantissa; {_QUANTISE_HINT}")
    return out


def legality(graph: Graph) -> list[str]:
    """Every reason ``graph`` cannot be lowered (node + the pass that fixes it); [] if it can."""
    try:
        lower(graph)
    except (TargetError, UserError) as e:
        first = str(e)
    else:
        return []
    problems = []
    for node in graph.nodes:
        if isinstance(node.op, O.Neuron):
            problems += _neuron_problems(graph, node)
        elif node.op.ann_only:
            problems.append(f"{node.op.name} %{node.name}: ANN op; convert first (the ann-to-loihi pipeline)")
        elif isinstance(node.op, LOIHI_SYNAPSE_OPS):
            for role in ("weight", "bias"):
                p = node.param(graph, role)
                if p is not None and not _integral(p):
                    problems.append(f"{node.op.name} %{node.name}: {role} is not integer-valued; {_QUANTISE_HINT}")
                    break
        elif not _has_lowering(node.op):
            problems.append(f"{node.op.name} %{node.name}: no Loihi layer for this op; run loihi-legalize")
    return problems or [first]


class Wiring(Protocol):
    """Who produces and who reads each value: a :class:`~snnc.ir.Graph`, or its :class:`WiringIndex`."""

    outputs: list[str]

    def producer(self, value: str) -> Node | None: ...

    def users(self, value: str) -> list[Node]: ...

    def only_user(self, value: str) -> Node | None: ...


class WiringIndex:
    """The producer and the users of every value of a graph, looked up once: ``Graph.producer`` and
    ``Graph.users`` scan every node, which made lowering quadratic (DenseNet's 2,700 nodes: 16 s).
    Answers as the graph does while the graph is not changed."""

    def __init__(self, graph: Graph) -> None:
        self.outputs = graph.outputs
        self._producer: dict[str, Node] = {}
        self._users: dict[str, list[Node]] = {}
        for n in graph.nodes:
            self._producer.setdefault(n.name, n)
            for v in dict.fromkeys(n.inputs):  # a node reading a value twice is one user
                self._users.setdefault(v, []).append(n)

    def producer(self, value: str) -> Node | None:
        return self._producer.get(value)

    def users(self, value: str) -> list[Node]:
        return list(self._users.get(value, ()))

    def only_user(self, value: str) -> Node | None:
        users = self._users.get(value, ())
        return users[0] if len(users) == 1 and value not in self.outputs else None


def is_join(graph: Wiring, node: Node) -> bool:
    """``node`` is an ``add`` of conv2d / linear currents (each feeding only it) read by one neuron, or
    by the readout (directly or through its host-side scale): one population (or the readout's
    integrators) with several synapse groups, whose dendritic accumulator sums them."""
    if not isinstance(node.op, O.Add):
        return False
    user = graph.only_user(node.name)
    if user is None or not (isinstance(user.op, O.Neuron) or reads_out(graph, user)):
        return False
    for v in node.inputs:
        src = graph.producer(v)
        if src is None or not isinstance(src.op, LOIHI_SYNAPSE_OPS) or graph.only_user(v) is not node:
            return False
    return True


def reads_out(graph: Wiring, node: Node) -> bool:
    """``node`` is the readout, or a host-side scale (no bias) that only the readout reads."""
    if isinstance(node.op, O.Readout):
        return True
    users = graph.users(node.name)
    return (isinstance(node.op, O.Scale) and "bias" not in node.params and len(users) == 1
            and isinstance(users[0].op, O.Readout))


def _has_lowering(op: O.Op) -> bool:
    """Whether :meth:`_Lowerer.visit` has a case for ``op`` (neurons aside)."""
    return op.value_identity or isinstance(
        op, (O.Flatten, O.Encode, O.Scale, O.Readout, *_SPIKE_ROUTING, *LOIHI_SYNAPSE_OPS)
    )


# ----------------------------------------------------------------------------------------------------
# lowering


class _Lowerer:
    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.w = WiringIndex(graph)  # the graph's producers and users (the lowering never changes it)
        self.layers: list[QLayer] = []
        self.index: dict[str, int] = {}  # IR value -> layer index that carries it
        self.node_layer: dict[str, str] = {}
        self.coding: InputCoding | None = None
        self.readout: Readout | None = None
        self.integrators: set[int] = set()  # layers that integrate for the readout (no neuron in the IR)
        # join operand -> (source, its synapse groups, bias)
        self.groups: dict[str, tuple[int, list[QLayer], np.ndarray]] = {}

    def fail(self, node: Node, message: str) -> TargetError:
        return TargetError(f"{node.op.name} %{node.name}: {message}")

    def add(self, layer: QLayer, srcs: Sequence[int]) -> int:
        i = len(self.layers)
        # netx and bitacc read "the previous layer" when inputs is empty
        layer.inputs = () if tuple(srcs) == (i - 1,) else tuple(srcs)
        self.layers.append(layer)
        return i

    def run(self) -> LoihiNet:
        g = self.g
        if len(g.inputs) != 1:
            raise TargetError(f"graph @{g.name}: Loihi networks take one input, got {len(g.inputs)}")
        in_name, in_type = g.inputs[0]
        for node in g.nodes:
            self.visit(node)
        self.align_branches()
        if self.coding is None or in_name not in self.index:
            raise TargetError(f"graph @{g.name}: the input %{in_name} needs an encode node (run encode-input)")
        if self.readout is None:
            raise TargetError(f"graph @{g.name}: no readout; a converted SNN ends in one")
        out = self.w.producer(g.outputs[0]) if len(g.outputs) == 1 else None
        if out is None or not isinstance(out.op, O.Readout):
            raise TargetError(f"graph @{g.name}: the graph output must be its readout")
        return LoihiNet(
            layers=self.layers, coding=self.coding, readout=self.readout, node_layer=self.node_layer
        )

    def visit(self, node: Node) -> None:
        op, g = node.op, self.g
        if isinstance(op, O.Encode):
            self.encode(node)
        elif isinstance(op, O.Scale):
            self.scale(node)
        elif op.value_identity:  # y = x: the layer that carries x carries y
            self.index[node.name] = self.source(node, 0)
        elif isinstance(op, O.Flatten):
            src = self.source(node, 0)
            if len(self.layers[src].shape) == 1:
                self.index[node.name] = src
            else:
                shape = (int(np.prod(self.layers[src].shape)),)
                layer = QLayer(name=node.name, kind=LayerKind.FLATTEN, shape=shape)
                self.index[node.name] = self.add(layer, [src])
        elif is_join(self.w, node):
            self.join(node)
        elif type(op) in _SPIKE_ROUTING:
            if isinstance(op, O.Concat) and op.axis != 0:
                raise self.fail(node, "Loihi concatenates along channels only (axis 0)")
            for v in node.inputs:
                if not g.value_type(v).is_event:
                    raise self.fail(node, f"reads analog %{v}; Loihi adds and concatenates spikes only")
            srcs = [self.source(node, i) for i in range(len(node.inputs))]
            assert node.type is not None
            layer = QLayer(name=node.name, kind=_SPIKE_ROUTING[type(op)], shape=tuple(node.type.shape))
            self.index[node.name] = self.add(layer, srcs)
        elif isinstance(op, LOIHI_SYNAPSE_OPS):
            self.weighted(node)
        elif isinstance(op, O.Neuron):
            if node.name not in self.index:
                raise self.fail(node, "must read a conv2d / linear that feeds only it (run loihi-legalize)")
        elif isinstance(op, O.Readout):
            self.read(node)
        else:
            raise self.fail(node, "no Loihi layer for this op; run loihi-legalize")

    def source(self, node: Node, i: int) -> int:
        v = node.inputs[i]
        if v not in self.index:
            raise self.fail(node, f"reads %{v}, which is not a Loihi layer (a current or an analog value)")
        return self.index[v]

    def encode(self, node: Node) -> None:
        op: O.Encode = node.op  # type: ignore[assignment]
        if self.coding is not None:
            raise self.fail(node, "a Loihi network has one input layer")
        if op.scheme is O.Scheme.PHASE:
            raise self.fail(node, "phase coding weights each step differently; Loihi synapses cannot")
        graded = op.scheme is O.Scheme.DIRECT
        t = self.g.value_type(node.inputs[0])
        # direct input: graded spikes of op.bits bits; the levels come from the quantiser's scale op
        bits = op.bits if graded else 0
        self.coding = InputCoding(scheme=op.scheme, levels=0.0, message_bits=bits, seed=op.seed)
        layer = QLayer(name=node.inputs[0], kind=LayerKind.INPUT, shape=tuple(t.shape), message_bits=bits)
        self.index[node.name] = self.add(layer, [])
        self.index[node.inputs[0]] = self.index[node.name]

    def scale(self, node: Node) -> None:
        op: O.Scale = node.op  # type: ignore[assignment]
        prod = self.w.producer(node.inputs[0])
        if prod is not None and isinstance(prod.op, O.Encode) and prod.op.scheme is O.Scheme.DIRECT:
            # the input quantiser: graded spikes round(Q x)
            if node.params or op.factor <= 0 or not _is_power_of_two(op.factor):
                raise self.fail(node, f"the input scale must be a power-of-two factor; {_QUANTISE_HINT}")
            assert self.coding is not None
            self.coding = dataclasses.replace(self.coding, scheme=O.Scheme.DIRECT, levels=op.factor)
            self.index[node.name] = self.index[node.inputs[0]]
            return
        users = self.w.users(node.name)
        if len(users) != 1 or not isinstance(users[0].op, O.Readout) or node.name in self.g.outputs:
            raise self.fail(node, "a scale on Loihi is only the host-side decoding before the readout")
        if "bias" in node.params:
            raise self.fail(node, "a readout scale with a bias is not supported")
        # read() looks through it

    def input_chain(self, i: int) -> bool:
        """Layer i is the input layer or a flatten of it (what reads analog graded spikes)."""
        layer = self.layers[i]
        if layer.kind is LayerKind.FLATTEN:
            return self.input_chain(layer.inputs[0] if layer.inputs else i - 1)
        return layer.kind is LayerKind.INPUT

    def weighted(self, node: Node) -> None:
        g = self.g
        user = self.w.only_user(node.name)
        readout_via_scale = (
            user is not None
            and isinstance(user.op, O.Scale)
            and len(self.w.users(user.name)) == 1
            and isinstance(self.w.users(user.name)[0].op, O.Readout)
        )
        joined = user is not None and is_join(self.w, user)
        if user is None or not (isinstance(user.op, (O.Neuron, O.Readout)) or readout_via_scale or joined):
            raise self.fail(node, "must feed exactly one neuron (or the readout); run loihi-legalize")
        src = self.source(node, 0)
        assert self.coding is not None
        if self.input_chain(src) and self.coding.scheme is O.Scheme.DIRECT and self.coding.levels == 0.0:
            raise self.fail(node, f"the direct-coded input has no quantiser scale; {_QUANTISE_HINT}")
        w = node.param(g, "weight")
        b = node.param(g, "bias")
        assert w is not None and node.type is not None
        if not _integral(w) or (b is not None and not _integral(b)):
            raise self.fail(node, f"weights and biases must be integers; {_QUANTISE_HINT}")
        w_int = np.rint(np.asarray(w, dtype=np.float64)).astype(np.int64)
        exps = channel_exponents(w_int)
        if exps is None:
            raise self.fail(node, f"weights must be even integers in [{WEIGHT_MIN}, {WEIGHT_MAX}], times 2^e per "
                                  f"output channel (e <= {MAX_WEIGHT_EXP}); {_QUANTISE_HINT}")
        shape = tuple(node.type.shape)
        bias = np.zeros(0, dtype=np.int64) if b is None else np.rint(np.asarray(b, dtype=np.float64)).astype(np.int64)
        if bias.size and (bias.min() < BIAS_MANT_MIN or bias.max() > BIAS_MANT_MAX):
            raise self.fail(node, f"bias mantissas must be 13-bit signed integers; {_QUANTISE_HINT}")
        if joined:  # one synapse group of the population behind the add (join() builds it)
            behind = self.w.users(user.name)[0]  # the neuron behind the add, or the readout (its integrators)
            population = behind.name if isinstance(behind.op, O.Neuron) else user.name
            self.groups[node.name] = (src, self.synapses(node, population, shape, w_int, exps, None), bias)
            self.node_layer[node.name] = population
            return
        if isinstance(user.op, O.Neuron):
            lif = self.lif(user, bias, shape)
            name = user.name
        else:
            lif = self.integrator_lif(bias, shape)
            name = node.name
        if isinstance(node.op, O.Linear) and len(self.layers[src].shape) != 1:
            raise self.fail(node, "reads a non-flat layer; insert a flatten")
        first, *rest = self.synapses(node, name, shape, w_int, exps, lif)
        layer = dataclasses.replace(first, extra=tuple(rest))
        i = self.add(layer, [src] * (1 + len(rest)))
        self.node_layer[node.name] = name
        self.index[node.name] = i
        if isinstance(user.op, O.Neuron):
            self.index[user.name] = i
            self.node_layer[user.name] = name
        else:
            self.integrators.add(i)

    def synapses(self, node: Node, name: str, shape: tuple[int, ...], w_int: np.ndarray, exps: np.ndarray,
                 lif: LifParams | None) -> list[QLayer]:
        """The dense or conv synapse groups of ``node`` into the neurons ``name`` (the first with ``lif``, a
        whole layer): one per weight exponent its output channels use, each holding the mantissas of its
        channels (zeros elsewhere) and the others marked ``exp_class``."""
        source = node.loc or node.name
        out = []
        for k, e in enumerate(np.unique(exps)):
            rows = (exps == e).reshape(-1, *([1] * (w_int.ndim - 1)))
            mant = np.where(rows, w_int >> int(e), 0)
            layer = QLayer(name=name, kind=LayerKind.DENSE, shape=shape, weight=mant, weight_exp=int(e),
                           lif=lif if k == 0 else None, source=source, exp_class=k > 0)
            if isinstance(node.op, O.Conv2d):
                op = node.op
                layer = dataclasses.replace(layer, kind=LayerKind.CONV, stride=op.stride, padding=op.padding,
                                            dilation=op.dilation, groups=op.groups)
            out.append(layer)
        return out

    def join(self, node: Node) -> None:
        """The add of a join and the neuron after it: one population fed by every operand's synapses; its
        bias is the sum of theirs (each is added every step, so they add up)."""
        neuron = self.w.only_user(node.name)
        assert neuron is not None and node.type is not None
        parts = [self.groups.pop(v) for v in node.inputs]  # (source, its synapse groups, its bias)
        shape = tuple(node.type.shape)
        channels = shape[0]
        total = np.zeros(channels, dtype=np.int64)
        for _, _, b in parts:
            if b.size:
                total = total + b.reshape(-1)
        if total.min(initial=0) < BIAS_MANT_MIN or total.max(initial=0) > BIAS_MANT_MAX:
            raise self.fail(node, f"the summed bias mantissas exceed 13 bits; {_QUANTISE_HINT}")
        bias = total if any(b.size for _, _, b in parts) else np.zeros(0, dtype=np.int64)
        integrator = not isinstance(neuron.op, O.Neuron)  # the readout's: no neuron in the IR
        lif = self.integrator_lif(bias, shape) if integrator else self.lif(neuron, bias, shape)
        groups = [(src, group) for src, member, _ in parts for group in member]
        main = dataclasses.replace(groups[0][1], lif=lif, extra=tuple(g for _, g in groups[1:]))
        i = len(self.layers)
        self.layers.append(main)
        main.inputs = tuple(src for src, _ in groups)
        if integrator:
            self.index[node.name] = i
            self.node_layer[node.name] = node.name
            self.integrators.add(i)
            return
        self.index[node.name] = self.index[neuron.name] = i
        self.node_layer[node.name] = self.node_layer[neuron.name] = neuron.name

    def integrator_lif(self, bias: np.ndarray, shape: tuple[int, ...]) -> LifParams:
        """The readout's integrators: no current decay, no leak, a threshold they never reach."""
        return LifParams(du=DU_NO_CURRENT, dv=0, vth_mant=VTH_MANT_MAX, bias_mant=self.bias_array(bias, shape),
                         bias_exp=NETX_BIAS_EXP)

    def align_branches(self) -> None:
        """Delay the synapse groups of a population whose sources are shallower than its deepest one, so
        that every branch delivers input step t in the same step, as the graph adds them (Loihi 2 synaptic
        delays; lava ``DelayDense``)."""
        depths = LoihiNet(layers=self.layers, coding=InputCoding(scheme=O.Scheme.DIRECT),
                          readout=Readout(ReadoutKind.VOLTAGE, 0)).depths
        for i, layer in enumerate(self.layers):
            if not layer.extra:
                continue
            for group, src in zip((layer, *layer.extra), layer.inputs, strict=True):
                group.delay = depths[i] - 1 - depths[src]
                if group.delay > MAX_DELAY:
                    raise TargetError(f"population '{layer.name}': a branch needs a delay of {group.delay} steps; "
                                      f"Loihi 2 synapses delay at most {MAX_DELAY}")

    def bias_array(self, bias: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | int:
        if bias.size == 0:
            return 0
        return bias.reshape(-1) if len(shape) == 1 else bias.reshape(-1, 1, 1)

    def lif(self, neuron: Node, bias: np.ndarray, shape: tuple[int, ...]) -> LifParams:
        problems = _neuron_problems(self.g, neuron)
        if problems:
            raise TargetError(problems[0])
        op: O.Neuron = neuron.op  # type: ignore[assignment]
        where = f"neuron %{neuron.name}"
        vth = int(np.rint(op.v_th))
        if not 0 <= vth <= VTH_MANT_MAX:
            raise TargetError(f"{where}: threshold mantissa {vth} is outside [0, {VTH_MANT_MAX}]; {_QUANTISE_HINT}")
        dv = 0 if op.model is O.NeuronModel.IF else _decay(1.0 - op.beta, 0, "1 - beta", where)
        du = DU_NO_CURRENT if op.model is not O.NeuronModel.CUBA else _decay(1.0 - op.alpha, 1, "1 - alpha", where)
        bias_mant = self.bias_array(bias, shape)
        return LifParams(du=du, dv=dv, vth_mant=vth, bias_mant=bias_mant, bias_exp=NETX_BIAS_EXP)

    def read(self, node: Node) -> None:
        op: O.Readout = node.op  # type: ignore[assignment]
        if op.exit_rule is not O.ExitRule.NONE:
            raise self.fail(node, "early exit needs the host to stop the chip; not supported on Loihi")
        if self.readout is not None:
            raise self.fail(node, "a Loihi network has one readout")
        v = node.inputs[0]
        scale = np.ones(1)
        prod = self.w.producer(v)
        if prod is not None and isinstance(prod.op, O.Scale):
            p = prod.param(self.g, "scale")
            scale = prod.op.factor * (np.ones(1) if p is None else np.asarray(p, dtype=np.float64).reshape(-1))
            v = prod.inputs[0]
        if v not in self.index:
            raise self.fail(node, f"reads %{v}, which is not a Loihi layer")
        i = self.index[v]
        layer = self.layers[i]
        kind = ReadoutKind.VOLTAGE if i in self.integrators else ReadoutKind.SPIKE_COUNT
        # a flatten carries its population's spikes (squeezenet ends in ReLU, pooling of a 1x1 map, flatten)
        if kind is ReadoutKind.SPIKE_COUNT and not (layer.has_neurons or layer.kind is LayerKind.FLATTEN):
            raise self.fail(node, f"reads %{v}, which holds no neurons")
        self.readout = Readout(kind, i, scale)


def channel_exponents(w_int: np.ndarray) -> np.ndarray | None:
    """Per output channel (first axis) the smallest weight exponent e <= MAX_WEIGHT_EXP with
    ``w_int[c] >> e`` even integers in [WEIGHT_MIN, WEIGHT_MAX] and nothing lost by the shift (netx's 8-bit
    form, run with lava's ``weight_exp = e``); None when a channel has none."""
    rows = np.asarray(w_int, dtype=np.int64).reshape(len(w_int), -1)
    # per channel three reductions decide every e: all weights are multiples of 2^(e+1) when their OR
    # is, and ">> e" keeps order, so the smallest and largest weight say whether all fit the range
    ored = np.bitwise_or.reduce(rows, axis=1)
    lo, hi = rows.min(axis=1, initial=0), rows.max(axis=1, initial=0)  # 0 always fits: no change
    exps = np.full(len(rows), -1, dtype=np.int64)
    for e in range(MAX_WEIGHT_EXP, -1, -1):
        ok = ((ored & ((2 << e) - 1)) == 0) & ((lo >> e) >= WEIGHT_MIN) & ((hi >> e) <= WEIGHT_MAX)
        exps[ok] = e
    return None if (exps < 0).any() else exps


def _is_power_of_two(x: float) -> bool:
    m, _ = np.frexp(x)
    return bool(m == 0.5)


def lower(graph: Graph) -> LoihiNet:
    """The :class:`LoihiNet` of a legalised, quantised graph (TargetError naming the node otherwise).
    Keeps the graph unchanged."""
    return _Lowerer(graph).run()


# ----------------------------------------------------------------------------------------------------
# from a netx file


def net_from_layers(layers: list[QLayer], coding: InputCoding) -> LoihiNet:
    """A :class:`LoihiNet` for a layer list read back from a netx file: the last layer is the readout
    (an integrator when its threshold is the largest mantissa and it does not leak, else spike counts)."""
    last = layers[-1]
    lif = last.lif_params
    if lif.vth_mant == VTH_MANT_MAX and lif.dv == 0:
        return LoihiNet(layers=layers, coding=coding, readout=Readout(ReadoutKind.VOLTAGE, len(layers) - 1))
    return LoihiNet(layers=layers, coding=coding, readout=Readout(ReadoutKind.SPIKE_COUNT, len(layers) - 1))


# ----------------------------------------------------------------------------------------------------
# calibrated spike rates


def calibrated_rates(ctx: PassContext, graph: Graph, net: LoihiNet, samples: int) -> dict[str, float] | None:
    """Spikes per neuron per timestep of every Loihi layer (``net``, a ``LoihiNet``), by simulating
    ``graph`` with the context's simulator; None without calibration data or simulator."""
    if ctx.calibration is None or ctx.simulator is None:
        return None
    x = np.asarray(ctx.calibration.x[:samples] if samples > 0 else ctx.calibration.x, dtype=np.float32)
    T = graph.attrs.timesteps or ctx.timesteps
    run = simulate_calibration(ctx, graph, x, T)  # the target's measured accuracy may reuse it
    rates: dict[str, float] = {}
    for node in graph.nodes:
        layer = net.node_layer.get(node.name)
        if layer is not None and isinstance(node.op, O.Neuron):
            rates[layer] = float(run.spikes.get(node.name, 0.0)) / (node.type.numel * T)  # type: ignore[union-attr]
    coding = net.coding
    xs = np.asarray(x, dtype=np.float64)
    if coding.scheme is O.Scheme.DIRECT:
        # a graded spike leaves every input whose level is not 0, every step of the presentation
        rates[net.layers[0].name] = float(np.mean(np.rint(coding.levels * xs) != 0))
    elif coding.scheme is O.Scheme.RATE:
        rates[net.layers[0].name] = float(np.mean(np.clip(xs, 0.0, 1.0)))
    else:  # ttfs: one spike per positive input over T steps
        rates[net.layers[0].name] = float(np.mean(xs > 0)) / T
    return rates

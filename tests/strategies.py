"""Hypothesis strategies that draw random, valid snnc IR graphs.

`graphs()` returns a strategy of `Graph` that `snnc.ir.verify` accepts: nodes in topological order,
every node's type inferred by its own op, every parameter in the store as a small random float32 array
under a source-like name (`features.3.weight`). Graphs cover every registered op (`snnc.ir.ops` and the
phase-coding ops of `snnc.ir.ops_phase`), residual adds
(two or three operands), concats along any axis, one or two graph inputs, several outputs, spike and
burst values, `loc(...)` strings with quotes and unicode, and parameter names with odd characters.

Three kinds (`GraphKind`):
- ANN: what a frontend emits: analog values, ANN-only ops (batchnorm, relu, clip, maxpool2d, dropout), no
  encode / neuron / readout; `timesteps = 0`.
- SNN: event-based: `verify(graph, require_event=True)` holds; every synaptic op reads spikes or bursts,
  except the layer right after a `direct` encoder; `timesteps > 0`.
- MIXED: any op wherever it type-checks (half-converted graphs, neurons reading analog, encoders mid-graph).

Pooling attributes stay within what PyTorch accepts (padding at most half the window) and values stay
small (at most a few hundred elements per value), so the graphs can be run by a simulator in tests.
Parameter arrays come from a numpy generator seeded by hypothesis, so examples replay and shrink.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from snnc.ir import Graph, GraphAttributes, Node, Op, TensorType
from snnc.ir import ops as O
from snnc.ir.ops_phase import PhaseDecode, PhaseMaxPool2d, PhaseNeuron
from snnc.ir.types import DType, Signal

__all__ = [
    "GraphKind",
    "ann_graphs",
    "graphs",
    "loc_strings",
    "op_names",
    "snn_graphs",
    "tensor_types",
]


class GraphKind(enum.Enum):
    ANN = "ann"
    SNN = "snn"
    MIXED = "mixed"


class _NameStyle(enum.Enum):
    """How a graph names its values, as different frontends do."""

    INDEX = "index"  # %0, %1, ...
    OP = "op"  # %conv2d3
    PATH = "path"  # %layer3.conv2d


# Strings that stress the printer's escaping: quotes, backslashes, unicode, newlines, IR punctuation.
_ODD_TEXT = [
    'a "quoted" name',
    "back\\slash",
    "ünïcødé → 层 🧠",
    "new\nline\ttab",
    "// not a comment",
    "{ } ( ) : = %x @g [1,2]",
    "\x00\x1f control",
]
_REAL_LOCS = [
    "model.py:12 in forward (features.0)",
    "/home/user/net.py:88 in forward (blocks.1.conv2)",
]


def loc_strings() -> st.SearchStrategy[str]:
    """Source locations as a frontend writes them, the odd strings above, or arbitrary text."""
    return st.one_of(st.sampled_from(_REAL_LOCS), st.sampled_from(_ODD_TEXT), st.text(max_size=24))


def tensor_types(max_rank: int = 4) -> st.SearchStrategy[TensorType]:
    """Any well-formed value type: every signal kind, burst sizes >= 2, every dtype, rank 0..max_rank."""
    shapes = st.lists(st.integers(1, 64), max_size=max_rank).map(tuple)
    plain = st.builds(
        TensorType,
        shapes,
        st.sampled_from([Signal.ANALOG, Signal.SPIKE]),
        burst=st.just(1),
        dtype=st.sampled_from(DType),
    )
    bursts = st.builds(
        TensorType, shapes, st.just(Signal.BURST), burst=st.integers(2, 255), dtype=st.sampled_from(DType)
    )
    return st.one_of(plain, bursts)


def op_names(graph: Graph) -> set[str]:
    """The op names used in a graph."""
    return {n.op.name for n in graph.nodes}


def ann_graphs(max_layers: int = 5) -> st.SearchStrategy[Graph]:
    return graphs(GraphKind.ANN, max_layers=max_layers)


def snn_graphs(max_layers: int = 5) -> st.SearchStrategy[Graph]:
    return graphs(GraphKind.SNN, max_layers=max_layers)


def graphs(kind: GraphKind | None = None, *, max_layers: int = 5) -> st.SearchStrategy[Graph]:
    """Random valid graphs of the given kind (any kind when None) with up to `max_layers` layers.

    A layer is one op, or a small block (a synaptic op and its neuron in SNN graphs; a branch and the
    add or concat that merges it back).
    """
    kinds = st.sampled_from(GraphKind) if kind is None else st.just(kind)
    return kinds.flatmap(lambda k: _graph(k, max_layers))


# ---------------------------------------------------------------------------------------------------------
# the builder


@dataclass
class _Builder:
    """Appends nodes to a graph under construction; every node's type comes from its op's infer_type."""

    draw: Callable[[st.SearchStrategy[Any]], Any]
    kind: GraphKind
    graph: Graph
    rng: np.random.Generator
    name_style: _NameStyle
    odd_param_names: bool
    counter: int = 0

    def type(self, value: str) -> TensorType:
        return self.graph.value_type(value)

    def emit(self, op: Op, inputs: list[str], params: dict[str, np.ndarray] | None = None) -> str:
        params = params or {}
        name = self._fresh_name(op.name)
        prefix = self._param_prefix(op.name)
        keys = {}
        for role, array in params.items():
            keys[role] = f"{prefix}.{role}"
            self.graph.params[keys[role]] = array
        in_types = [self.type(v) for v in inputs]
        # A VerifyError here is a bug in this module: it must only draw attributes that fit.
        ty = op.infer_type(name, in_types, {r: tuple(a.shape) for r, a in params.items()})
        loc = self.draw(st.one_of(st.just(""), loc_strings()))
        self.graph.nodes.append(Node(name, op, tuple(inputs), params=keys, type=ty, loc=loc))
        return name

    def array(self, *shape: int, low: float | None = None, high: float | None = None) -> np.ndarray:
        if low is None:
            return (self.rng.standard_normal(shape) * 0.5).astype(np.float32)
        return self.rng.uniform(low, high, shape).astype(np.float32)

    def per_channel(self, channels: int, low: float, high: float) -> np.ndarray:
        """A per-channel parameter: one value per channel, or a single broadcast value."""
        n = self.draw(st.sampled_from([channels, 1]))
        return self.array(n, low=low, high=high)

    def _fresh_name(self, opname: str) -> str:
        taken = self.graph.value_names()
        while True:
            i = self.counter
            self.counter += 1
            name = {
                _NameStyle.INDEX: str(i),
                _NameStyle.OP: f"{opname}{i}",
                _NameStyle.PATH: f"layer{i}.{opname}",
            }[self.name_style]
            if name not in taken:
                return name

    def _param_prefix(self, opname: str) -> str:
        i = self.counter - 1
        if self.odd_param_names:
            return f'blocks.{i}."{opname}".層'
        return f"features.{i}"


def _graph(kind: GraphKind, max_layers: int) -> st.SearchStrategy[Graph]:
    @st.composite
    def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Graph:
        name = draw(st.sampled_from(["net", "digits_cnn", "model.v2", "_g", "resnet_8"]))
        timesteps = draw(st.integers(1, 8)) if kind is GraphKind.SNN else 0
        if kind is GraphKind.MIXED:
            timesteps = draw(st.integers(0, 8))
        rank = draw(st.sampled_from([3, 3, 2, 1]))
        shape = _input_shape(draw, rank)
        input_names = draw(st.sampled_from([("x", "aux"), ("input", "x.1"), ("img", "_extra")]))
        n_inputs = draw(st.integers(1, 2))
        inputs = [(input_names[i], TensorType(shape)) for i in range(n_inputs)]
        graph = Graph(name, inputs, attrs=GraphAttributes(timesteps=timesteps))
        b = _Builder(
            draw,
            kind,
            graph,
            np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
            draw(st.sampled_from(_NameStyle)),
            draw(st.integers(0, 9)) == 0,  # odd parameter names in one graph out of ten
        )
        # Two inputs are merged by shape, so their encoders must keep the shape (no direct layer).
        values = [_entry(b, v, allow_direct=n_inputs == 1) for v, _ in inputs]
        x = values[0] if len(values) == 1 else _merge(b, values)
        for _ in range(draw(st.integers(0, max_layers))):
            x = _layer(b, x)
        x = _exit(b, x)
        outputs = [x]
        # Sometimes also expose an earlier value (a tap), as multi-output graphs do.
        earlier = [n.name for n in graph.nodes if n.name != x]
        if earlier and draw(st.integers(0, 3)) == 0:
            outputs.insert(draw(st.integers(0, 1)), draw(st.sampled_from(earlier)))
        graph.outputs = outputs
        return graph

    return build()


def _input_shape(draw: Callable[[st.SearchStrategy[Any]], Any], rank: int) -> tuple[int, ...]:
    if rank == 3:
        return (draw(st.integers(1, 3)), draw(st.integers(3, 8)), draw(st.integers(3, 8)))
    if rank == 2:
        return (draw(st.integers(1, 3)), draw(st.integers(3, 10)))
    return (draw(st.integers(2, 16)),)


# ---------------------------------------------------------------------------------------------------------
# entry, layers, exit


def _entry(b: _Builder, x: str, allow_direct: bool) -> str:
    """What a graph input goes through first: an encoder in SNN graphs (sometimes in MIXED ones)."""
    if b.kind is GraphKind.ANN or (b.kind is GraphKind.MIXED and b.draw(st.booleans())):
        return x
    schemes = (
        list(O.Scheme)
        if allow_direct or b.kind is GraphKind.MIXED
        else [s for s in O.Scheme if s is not O.Scheme.DIRECT]
    )
    e = b.emit(_encode(b, schemes), [x])
    if b.kind is GraphKind.SNN and not b.type(e).is_event:
        # a direct encoder: the synaptic op right after it is the encoding layer, then a neuron.
        e = _neuron(b, _synaptic(b, e))
    return e


def _merge(b: _Builder, values: list[str]) -> str:
    """Combine two same-shaped streams with an add or a concat."""
    if b.draw(st.booleans()):
        return _after_synaptic(b, b.emit(O.Add(), values))
    axis = b.draw(st.integers(0, len(b.type(values[0]).shape) - 1))
    return b.emit(O.Concat(axis=axis), values)


def _exit(b: _Builder, x: str) -> str:
    """An optional classifier head: flatten, linear, and in spiking graphs a readout or an output neuron
    read by its membrane."""
    if not b.draw(st.booleans()):
        return x
    if len(b.type(x).shape) != 1:
        x = b.emit(O.Flatten(), [x])
    if b.kind is GraphKind.SNN and not b.type(x).is_event:
        x = _neuron(b, x)
    x = _linear(b, x)
    if b.kind is not GraphKind.ANN:
        head = b.draw(st.integers(0, 3))
        if head == 1:
            x = _readout(b, x)
        elif head == 2:
            x = _neuron(b, x, emit=O.Emit.MEMBRANE)
        elif head == 3:  # a phase-coded output layer: decoded, then read out (what phase-coding emits)
            x = _readout(b, _phase_decode(b, x))
    return x


def _after_synaptic(b: _Builder, x: str) -> str:
    """In SNN graphs every analog value feeds a neuron (sometimes a phase neuron) before the next
    synaptic op."""
    if b.kind is not GraphKind.SNN:
        return x
    return _phase_neuron(b, x) if b.draw(st.integers(0, 4)) == 0 else _neuron(b, x)


def _layer(b: _Builder, x: str) -> str:
    t = b.type(x)
    rank = len(t.shape)
    small = t.numel <= 256
    steps: list[Callable[[_Builder, str], str]] = [_scale, _identity, _reshape]
    # weighted layers and pools twice: they are what most graphs are made of
    if rank == 3:
        steps += [_conv2d, _conv2d, _avgpool2d, _sumpool2d, _adaptive_avgpool2d]
        if small:
            steps += [_upsample]
    if rank == 2:
        steps += [_conv1d, _conv1d]
    if rank == 1:
        steps += [_linear, _linear]
    if rank >= 2:
        steps += [_flatten, _permute]
    steps += [_slice]
    if small:
        steps += [_residual, _concat]
        if b.kind is not GraphKind.ANN:
            steps += [_mul]
    if b.kind is not GraphKind.SNN:
        steps += [_batchnorm, _relu, _clip, _dropout]
        if rank == 3:
            steps += [_maxpool2d, _maxpool2d]
    if b.kind is not GraphKind.ANN:
        if rank == 3:
            steps += [_spike_maxpool, _spike_maxpool, _spike_count_maxpool, _phase_maxpool]
    if b.kind is GraphKind.MIXED:
        steps += [_neuron, _encode_step, _readout, _phase_neuron, _phase_decode]
    step = b.draw(st.sampled_from(steps))
    y = step(b, x)
    return y if b.type(y).is_event else _after_synaptic(b, y)


# ---------------------------------------------------------------------------------------------------------
# one function per op: draw attributes that fit the operand, then emit


def _encode(b: _Builder, schemes: list[O.Scheme] | None = None) -> O.Encode:
    return O.Encode(
        scheme=b.draw(st.sampled_from(schemes or list(O.Scheme))),
        seed=b.draw(st.integers(-5, 2**31 - 1)),
        bits=b.draw(st.integers(1, 16)),
    )


def _encode_step(b: _Builder, x: str) -> str:
    return b.emit(_encode(b), [x])


def _neuron(b: _Builder, x: str, emit: O.Emit = O.Emit.SPIKES) -> str:
    """A neuron with any valid dynamics; it emits spikes unless told (or, in MIXED graphs, drawn) otherwise."""
    d = b.draw
    if b.kind is GraphKind.MIXED:
        emit = d(st.sampled_from(O.Emit))
    model = d(st.sampled_from(O.NeuronModel))
    # only meaningful combinations: a field the model's equations do not read stays at its default
    leak = O.Leak.MULTIPLY if model is O.NeuronModel.IF else d(st.sampled_from(O.Leak))
    leaky = not (model is O.NeuronModel.IF and leak is O.Leak.MULTIPLY)
    uses_beta = leaky and leak is not O.Leak.TAU
    reset = d(st.sampled_from(O.Reset))
    reset_delay = reset is not O.Reset.NONE and d(st.booleans())
    op = O.Neuron(
        model=model,
        v_th=d(st.floats(0.05, 4.0)),
        reset=reset,
        v_reset=d(st.floats(-1.0, 0.5)) if reset is O.Reset.HARD else 0.0,
        v_init=d(st.floats(0.0, 1.0)),
        beta=d(st.floats(0.5, 1.0)) if uses_beta else 1.0,
        alpha=d(st.floats(0.0, 0.99)) if model is O.NeuronModel.CUBA else 0.0,
        max_spikes=d(st.sampled_from([1, 1, 2, 4])),
        strict=d(st.booleans()),
        reset_delay=reset_delay,
        leak=leak,
        tau=d(st.floats(1.0, 10.0)) if leak is O.Leak.TAU else 2.0,
        decay_input=d(st.booleans()) if leak is not O.Leak.MULTIPLY else True,
        out_scale=d(st.floats(0.1, 4.0)) if emit is O.Emit.SPIKES else 1.0,
        emit=emit,
        presubtract=reset is O.Reset.SOFT and not reset_delay and d(st.booleans()),
    )
    if reset is O.Reset.SOFT and op.max_spikes == 1 and not reset_delay and not op.presubtract and emit is O.Emit.SPIKES:
        op = dataclasses.replace(op, negative=d(st.sampled_from(O.Negative)))
    channels = b.type(x).channels
    params = {}
    roles = ["v_th", "out_scale"] + (["beta"] if uses_beta else [])
    for role in roles:
        if d(st.booleans()):
            low, high = (0.5, 1.0) if role == "beta" else (0.1, 2.0)
            params[role] = b.per_channel(channels, low, high)
    return b.emit(op, [x], params)


def _phase_timing(b: _Builder) -> dict[str, Any]:
    """The window of a phase op: K steps from ``start``."""
    return {"window": b.draw(st.integers(1, 8)), "start": b.draw(st.integers(0, 16))}


def _phase_base(b: _Builder) -> float:
    return b.draw(st.one_of(st.just(2.0), st.floats(1.01, 2.0)))


def _phase_neuron(b: _Builder, x: str) -> str:
    d = b.draw
    op = PhaseNeuron(
        base=_phase_base(b),
        **_phase_timing(b),
        v_th=d(st.floats(0.05, 4.0)),
        out_scale=d(st.floats(0.1, 4.0)),
        constant_input=d(st.booleans()),
    )
    channels = b.type(x).channels
    params = {}
    for role, low, high in (("v_th", 0.1, 2.0), ("out_scale", 0.1, 2.0), ("bias", -0.5, 0.5)):
        if d(st.booleans()):
            params[role] = b.per_channel(channels, low, high)
    return b.emit(op, [x], params)


def _phase_decode(b: _Builder, x: str) -> str:
    timing = _phase_timing(b)
    total = timing["start"] + timing["window"] + b.draw(st.integers(0, 8))
    params = {"bias": b.per_channel(b.type(x).channels, -0.5, 0.5)} if b.draw(st.booleans()) else {}
    return b.emit(PhaseDecode(base=_phase_base(b), **timing, total=total), [x], params)


def _phase_maxpool(b: _Builder, x: str) -> str:
    _, h, w = b.type(x).shape
    return b.emit(PhaseMaxPool2d(**_pool_attrs(b, h, w), **_phase_timing(b)), [x])


def _readout(b: _Builder, x: str) -> str:
    rule = b.draw(st.sampled_from(O.ExitRule))
    params = {}
    if rule is not O.ExitRule.NONE:
        params["exit_thresholds"] = b.array(max(b.graph.attrs.timesteps, 1), low=0.0, high=1.0)
    return b.emit(O.Readout(mode=b.draw(st.sampled_from(O.ReadoutMode)), exit_rule=rule), [x], params)


def _synaptic(b: _Builder, x: str) -> str:
    """The first layer after a direct encoder: any synaptic op that fits the operand's rank."""
    rank = len(b.type(x).shape)
    choices: list[Callable[[_Builder, str], str]] = [_scale]
    choices += {3: [_conv2d, _avgpool2d, _sumpool2d], 2: [_conv1d], 1: [_linear]}.get(rank, [])
    return b.draw(st.sampled_from(choices))(b, x)


def _bias(b: _Builder, n: int) -> dict[str, np.ndarray]:
    return {"bias": b.array(n)} if b.draw(st.booleans()) else {}


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def _kernel_dim(b: _Builder, size: int, pad: int, dilation: int) -> int:
    """A kernel size whose dilated window fits the padded input (so the output is not empty)."""
    k_max = min(3, (size + 2 * pad - 1) // dilation + 1)
    return b.draw(st.integers(1, k_max))


def _conv2d(b: _Builder, x: str, cout: int | None = None, same: bool = False) -> str:
    cin, h, w = b.type(x).shape
    if same:  # keeps [H, W]: a residual or concat branch
        ks, stride, pad, dil, groups = (3, 3), (1, 1), (1, 1), (1, 1), 1
        cout = cout or cin
    else:
        dil = (b.draw(st.integers(1, 2)), b.draw(st.integers(1, 2)))
        pad = (b.draw(st.integers(0, 1)), b.draw(st.integers(0, 1)))
        ks = (_kernel_dim(b, h, pad[0], dil[0]), _kernel_dim(b, w, pad[1], dil[1]))
        stride = (b.draw(st.integers(1, 2)), b.draw(st.integers(1, 2)))
        groups = b.draw(st.sampled_from(_divisors(cin)))
        cout = groups * b.draw(st.integers(1, max(1, 6 // groups)))
    params = {"weight": b.array(cout, cin // groups, *ks), **_bias(b, cout)}
    return b.emit(O.Conv2d(stride=stride, padding=pad, dilation=dil, groups=groups), [x], params)


def _conv1d(b: _Builder, x: str, cout: int | None = None, same: bool = False) -> str:
    cin, length = b.type(x).shape
    if same:
        k, stride, pad, dil, groups = 3, 1, 1, 1, 1
        cout = cout or cin
    else:
        dil = b.draw(st.integers(1, 2))
        pad = b.draw(st.integers(0, 1))
        k = _kernel_dim(b, length, pad, dil)
        stride = b.draw(st.integers(1, 2))
        groups = b.draw(st.sampled_from(_divisors(cin)))
        cout = groups * b.draw(st.integers(1, max(1, 6 // groups)))
    params = {"weight": b.array(cout, cin // groups, k), **_bias(b, cout)}
    return b.emit(O.Conv1d(stride=stride, padding=pad, dilation=dil, groups=groups), [x], params)


def _linear(b: _Builder, x: str, nout: int | None = None) -> str:
    (nin,) = b.type(x).shape
    nout = nout or b.draw(st.integers(1, 10))
    return b.emit(O.Linear(), [x], {"weight": b.array(nout, nin), **_bias(b, nout)})


def _pool_attrs(b: _Builder, h: int, w: int) -> dict[str, Any]:
    kernel = (b.draw(st.integers(1, min(3, h))), b.draw(st.integers(1, min(3, w))))
    return {
        "kernel": kernel,
        "stride": (b.draw(st.integers(1, 3)), b.draw(st.integers(1, 3))),
        "padding": (b.draw(st.integers(0, kernel[0] // 2)), b.draw(st.integers(0, kernel[1] // 2))),
        "ceil_mode": b.draw(st.booleans()),
    }


def _avgpool2d(b: _Builder, x: str) -> str:
    _, h, w = b.type(x).shape
    return b.emit(O.AvgPool2d(**_pool_attrs(b, h, w), count_include_pad=b.draw(st.booleans())), [x])


def _sumpool2d(b: _Builder, x: str) -> str:
    _, h, w = b.type(x).shape
    return b.emit(O.SumPool2d(**_pool_attrs(b, h, w)), [x])


def _maxpool2d(b: _Builder, x: str) -> str:
    _, h, w = b.type(x).shape
    return b.emit(O.MaxPool2d(**_pool_attrs(b, h, w)), [x])


def _spike_maxpool(b: _Builder, x: str) -> str:
    _, h, w = b.type(x).shape
    return b.emit(O.SpikeMaxPool2d(**_pool_attrs(b, h, w)), [x])


def _spike_count_maxpool(b: _Builder, x: str) -> str:
    _, h, w = b.type(x).shape
    return b.emit(O.SpikeCountMaxPool2d(**_pool_attrs(b, h, w)), [x])


def _scale(b: _Builder, x: str) -> str:
    channels = b.type(x).channels
    params = {}
    if b.draw(st.booleans()):
        params["scale"] = b.per_channel(channels, -2.0, 2.0)
    if b.draw(st.booleans()):
        params["bias"] = b.per_channel(channels, -1.0, 1.0)
    return b.emit(O.Scale(factor=b.draw(st.floats(-4.0, 4.0))), [x], params)


def _batchnorm(b: _Builder, x: str) -> str:
    c = b.type(x).channels
    params = {"mean": b.array(c), "var": b.array(c, low=0.5, high=2.0)}
    if b.draw(st.booleans()):
        params["weight"] = b.array(c, low=0.5, high=1.5)
    params.update(_bias(b, c))
    return b.emit(O.BatchNorm(eps=b.draw(st.sampled_from([1e-5, 1e-3, 0.1]))), [x], params)


def _relu(b: _Builder, x: str) -> str:
    return b.emit(O.Relu(), [x])


def _clip(b: _Builder, x: str) -> str:
    lo = b.draw(st.sampled_from([0.0, -1.0, -0.5]))
    hi = lo + b.draw(st.floats(0.25, 8.0))
    return b.emit(
        O.Clip(lo=lo, hi=hi, levels=b.draw(st.integers(0, 16)), shift=b.draw(st.floats(0.0, 1.0))), [x]
    )


def _dropout(b: _Builder, x: str) -> str:
    return b.emit(O.Dropout(p=b.draw(st.floats(0.0, 0.9))), [x])


def _identity(b: _Builder, x: str) -> str:
    return b.emit(O.Identity(), [x])


def _flatten(b: _Builder, x: str) -> str:
    return b.emit(O.Flatten(), [x])


def _reshape(b: _Builder, x: str) -> str:
    """Reshape to rank 1, 2 or 3, by splitting the element count at its divisors."""
    n = b.type(x).numel
    rank = b.draw(st.integers(1, 3))
    shape = [n]
    for _ in range(rank - 1):
        first = b.draw(st.sampled_from(_divisors(shape[-1])))
        shape[-1:] = [first, shape[-1] // first]
    return b.emit(O.Reshape(shape=tuple(shape)), [x])


def _same_shape_branch(b: _Builder, x: str, channels: int | None = None) -> str:
    """A branch that keeps the spatial shape (and the channel count unless `channels` is given)."""
    shape = b.type(x).shape
    if len(shape) == 3:
        y = _conv2d(b, x, cout=channels, same=True)
    elif len(shape) == 2:
        y = _conv1d(b, x, cout=channels, same=True)
    else:
        y = _linear(b, x, nout=channels or shape[0])
    return _after_synaptic(b, y)


def _residual(b: _Builder, x: str) -> str:
    """y = x + f(x) (+ x again, for a three-operand add)."""
    branch = _same_shape_branch(b, x)
    operands = [x, branch] + ([x] if b.draw(st.integers(0, 3)) == 0 else [])
    return b.emit(O.Add(), operands)


def _mul(b: _Builder, x: str) -> str:
    """y = x · f(x) or x · (1 − f(x)): SEW-ResNet's AND / IAND connect of a block to its identity."""
    branch = _same_shape_branch(b, x)
    return b.emit(O.Mul(complement=b.draw(st.booleans())), [x, branch])


def _concat(b: _Builder, x: str) -> str:
    """Concatenate x with a branch: along channels with a new channel count, or along any axis."""
    shape = b.type(x).shape
    axis = b.draw(st.integers(0, len(shape) - 1))
    channels = b.draw(st.integers(1, 4)) if axis == 0 and len(shape) >= 2 else None
    branch = _same_shape_branch(b, x, channels)
    operands = [x, branch] if b.draw(st.booleans()) else [branch, x]
    return b.emit(O.Concat(axis=axis), operands)


def _permute(b: _Builder, x: str) -> str:
    rank = len(b.type(x).shape)
    dims = b.draw(st.permutations(range(rank)))
    return b.emit(O.Permute(dims=tuple(dims)), [x])


def _slice(b: _Builder, x: str) -> str:
    shape = b.type(x).shape
    axis = b.draw(st.integers(0, len(shape) - 1))
    start = b.draw(st.integers(0, shape[axis] - 1))
    stop = b.draw(st.integers(start + 1, shape[axis]))
    return b.emit(O.Slice(axis=axis, start=start, stop=stop, step=b.draw(st.integers(1, 3))), [x])


def _upsample(b: _Builder, x: str) -> str:
    return b.emit(O.Upsample(scale=(b.draw(st.integers(1, 3)), b.draw(st.integers(1, 3)))), [x])


def _adaptive_avgpool2d(b: _Builder, x: str) -> str:
    _, h, w = b.type(x).shape
    size = (b.draw(st.integers(1, h + 2)), b.draw(st.integers(1, w + 2)))
    return b.emit(O.AdaptiveAvgPool2d(output_size=size), [x])

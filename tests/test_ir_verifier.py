"""The verifier rejects each kind of malformed graph with an exact message that names the node and the
values, accepts every generated graph, and checks event-based graphs on request (require_event)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import graphs

from snnc.errors import VerifyError
from snnc.ir import Graph, Node, Signal, TensorType, analog, check_event_based, parse_graph, spike, verify
from snnc.ir import ops as O


def build(body: str, inputs: str = "%x: analog[1,4,4]", attrs: str = "", **params: tuple[int, ...]) -> Graph:
    """A graph from its body lines, with a parameter store of zeros of the given shapes.

    Parameter keys are keyword names with `__` for `.` (`conv__weight` is "conv.weight").
    """
    text = f"graph @g({inputs}){attrs} {{\n{body}\n}}\n"
    graph = parse_graph(text)
    graph.params = {k.replace("__", "."): np.zeros(shape, np.float32) for k, shape in params.items()}
    return graph


def rejects(graph: Graph, message: str, *, require_event: bool = False) -> None:
    with pytest.raises(VerifyError, match="^" + re.escape(message) + "$"):
        verify(graph, require_event=require_event)


# -- structure ----------------------------------------------------------------------------------------------


def test_operand_used_before_its_definition() -> None:
    g = build("  %a = relu(%b) : analog[1,4,4]\n  %b = relu(%x) : analog[1,4,4]\n  output %a")
    rejects(g, "relu %a: operand %b is not defined before its use")


def test_operand_never_defined() -> None:
    g = build("  %a = add(%x, %nowhere) : analog[1,4,4]\n  output %a")
    rejects(g, "add %a: operand %nowhere is not defined before its use")


def test_value_defined_twice() -> None:
    g = build("  %a = relu(%x) : analog[1,4,4]\n  %a = identity(%x) : analog[1,4,4]\n  output %a")
    rejects(g, "identity %a: value %a is defined twice")


def test_node_redefining_a_graph_input() -> None:
    g = build("  %x = relu(%x) : analog[1,4,4]\n  output %x")
    rejects(g, "relu %x: value %x is defined twice")


def test_graph_input_declared_twice() -> None:
    g = build("  output %x", inputs="%x: analog[2], %x: analog[3]")
    rejects(g, "graph input %x is declared twice")


def test_wrong_arity() -> None:
    rejects(build("  %a = relu(%x, %x) : analog[1,4,4]\n  output %a"), "relu %a: expects 1 operand(s), got 2")
    rejects(build("  %a = flatten() : analog[16]\n  output %a"), "flatten %a: expects 1 operand(s), got 0")
    rejects(build("  %a = add(%x) : analog[1,4,4]\n  output %a"), "add %a: needs at least 2 operands")
    rejects(build("  %a = concat(%x) : analog[1,4,4]\n  output %a"), "concat %a: needs at least 2 operands")


def test_no_inputs_no_outputs_and_undefined_output() -> None:
    rejects(build("  output %x", inputs=""), "graph @g has no inputs")
    g = build("  %a = relu(%x) : analog[1,4,4]\n  output %a")
    g.outputs = []
    rejects(g, "graph @g has no outputs")
    rejects(build("  %a = relu(%x) : analog[1,4,4]\n  output %b"), "graph output %b is not defined")


def test_invalid_names() -> None:
    g = build("  output %x")
    g.name = "my graph"
    rejects(g, "graph name '@my graph' is not a valid identifier")
    g = build("  output %x")
    g.inputs = [("1x", analog(2))]
    g.outputs = ["1x"]
    rejects(g, "graph input '%1x' is not a valid name")
    g = build("  %a = relu(%x) : analog[1,4,4]\n  output %a")
    g.nodes[0].name = "a-b"
    g.outputs = ["a-b"]
    rejects(g, "relu %a-b: 'a-b' is not a valid value name")


def test_negative_timesteps() -> None:
    rejects(
        build("  output %x", attrs=" attributes {timesteps = -1}"),
        "graph attribute timesteps = -1 must be >= 0",
    )


def test_node_without_a_type() -> None:
    g = build("  %a = relu(%x) : analog[1,4,4]\n  output %a")
    g.nodes[0].type = None
    rejects(g, "relu %a: has no type")


# -- parameters ---------------------------------------------------------------------------------------------


CONV = '  %c = conv2d(%x) params {weight = "conv.weight"} : analog[2,2,2]\n  output %c'


def test_missing_required_parameter() -> None:
    rejects(
        build("  %c = conv2d(%x) : analog[2,2,2]\n  output %c"),
        "conv2d %c: missing required parameter 'weight'",
    )
    g = build('  %b = batchnorm(%x) params {mean = "m"} : analog[1,4,4]\n  output %b', m=(1,))
    rejects(g, "batchnorm %b: missing required parameter 'var'")


def test_parameter_not_in_the_store() -> None:
    rejects(build(CONV), 'conv2d %c: parameter weight = "conv.weight" is not in the parameter store')


def test_unknown_parameter_role() -> None:
    g = build(CONV, conv__weight=(2, 1, 3, 3))
    g.nodes[0].params["kernel"] = "conv.weight"
    rejects(g, "conv2d %c: unknown parameter role 'kernel'")


def test_valid_conv_is_accepted() -> None:
    verify(build(CONV, conv__weight=(2, 1, 3, 3)))


# -- types --------------------------------------------------------------------------------------------------


def test_wrong_declared_type() -> None:
    rejects(
        build("  %a = relu(%x) : spike[1,4,4]\n  output %a"),
        "relu %a: declared type spike[1,4,4], inferred analog[1,4,4]",
    )
    g = build(CONV.replace("analog[2,2,2]", "analog[2,3,3]"), conv__weight=(2, 1, 3, 3))
    rejects(g, "conv2d %c: declared type analog[2,3,3], inferred analog[2,2,2]")
    g = build("  %n = neuron(%x) {max_spikes = 4} : spike[1,4,4]\n  output %n")
    rejects(g, "neuron %n: declared type spike[1,4,4], inferred burst<4>[1,4,4]")
    g = build("  %a = relu(%x) : analog[1,4,4]xi8\n  output %a")
    rejects(g, "relu %a: declared type analog[1,4,4]xi8, inferred analog[1,4,4]")


OP_ERRORS = [
    # (body, inputs, params, exact message)
    (
        CONV,
        "%x: analog[3,4,4]",
        {"conv.weight": (2, 1, 3, 3)},
        "conv2d %c: weight expects 1 input channels, input has 3",
    ),
    (
        CONV,
        "%x: analog[16]",
        {"conv.weight": (2, 1, 3, 3)},
        "conv2d %c: expects a [C,H,W] input, got analog[16]",
    ),
    (
        CONV,
        "%x: analog[1,4,4]",
        {"conv.weight": (2, 1, 3)},
        "conv2d %c: weight must be [Cout, Cin/groups, KH, KW], got [2, 1, 3]",
    ),
    (
        CONV,
        "%x: analog[1,2,2]",
        {"conv.weight": (2, 1, 3, 3)},
        "conv2d %c: kernel 3x3 does not fit input analog[1,2,2]",
    ),
    (
        '  %c = conv2d(%x) {groups = 2} params {weight = "w"} : analog[3,4,4]\n  output %c',
        "%x: analog[4,4,4]",
        {"w": (3, 2, 1, 1)},
        "conv2d %c: 3 output channels not divisible by groups=2",
    ),
    (
        '  %c = conv2d(%x) params {weight = "w", bias = "b"} : analog[2,2,2]\n  output %c',
        "%x: analog[1,4,4]",
        {"w": (2, 1, 3, 3), "b": (3,)},
        "conv2d %c: bias has shape [3], expected [2]",
    ),
    (
        '  %c = conv1d(%x) params {weight = "w"} : analog[2,2]\n  output %c',
        "%x: analog[2,4]",
        {"w": (2, 1, 3)},
        "conv1d %c: weight expects 1 input channels, input has 2",
    ),
    (
        '  %c = conv1d(%x) params {weight = "w"} : analog[2,2]\n  output %c',
        "%x: analog[1,4,4]",
        {"w": (2, 1, 3)},
        "conv1d %c: expects a [C,L] input, got analog[1,4,4]",
    ),
    (
        '  %l = linear(%x) params {weight = "fc.weight"} : analog[10]\n  output %l',
        "%x: analog[4,2,2]",
        {"fc.weight": (10, 16)},
        "linear %l: expects a flat input, got analog[4,2,2]; insert a flatten",
    ),
    (
        '  %l = linear(%x) params {weight = "fc.weight"} : analog[10]\n  output %l',
        "%x: spike[12]",
        {"fc.weight": (10, 16)},
        "linear %l: weight expects 16 inputs, input has 12",
    ),
    (
        '  %l = linear(%x) params {weight = "w", bias = "b"} : analog[10]\n  output %l',
        "%x: analog[16]",
        {"w": (10, 16), "b": (16,)},
        "linear %l: bias has shape [16], expected [10]",
    ),
    (
        '  %l = linear(%x) params {weight = "w"} : analog[10]\n  output %l',
        "%x: analog[16]",
        {"w": (160,)},
        "linear %l: weight must be [Nout, Nin], got [160]",
    ),
    (
        "  %s = add(%a, %b) : analog[4]\n  output %s",
        "%a: analog[4], %b: spike[5]",
        {},
        "add %s: operand shapes differ: analog[4] vs spike[5]",
    ),
    (
        "  %s = add(%a, %a, %b) : analog[2,2]\n  output %s",
        "%a: analog[2,2], %b: analog[4]",
        {},
        "add %s: operand shapes differ: analog[2,2] vs analog[2,2] vs analog[4]",
    ),
    (
        "  %c = concat(%a, %b) : analog[4,4,4]\n  output %c",
        "%a: analog[2,4,4], %b: analog[2,4,5]",
        {},
        "concat %c: operand shapes ['analog[2,4,4]', 'analog[2,4,5]'] differ outside axis 0",
    ),
    (
        "  %c = concat(%a, %b) {axis = 1} : analog[4,4]\n  output %c",
        "%a: analog[2,4], %b: analog[2,4,1]",
        {},
        "concat %c: operand shapes ['analog[2,4]', 'analog[2,4,1]'] differ outside axis 1",
    ),
    (
        "  %c = concat(%a, %b) {axis = 2} : analog[4,4]\n  output %c",
        "%a: analog[2,4], %b: analog[2,4]",
        {},
        "concat %c: axis 2 out of range for analog[2,4]",
    ),
    (
        '  %n = neuron(%x) params {v_th = "n.v_th"} : spike[16,2,2]\n  output %n',
        "%x: analog[16,2,2]",
        {"n.v_th": (8,)},
        "neuron %n: v_th has 8 values, input has 16 channels",
    ),
    (
        '  %n = neuron(%x) {model = "lif"} params {beta = "b"} : spike[4]\n  output %n',
        "%x: analog[4]",
        {"b": (3,)},
        "neuron %n: beta has 3 values, input has 4 channels",
    ),
    (
        "  %n = neuron(%x) {beta = 0.9} : spike[4]\n  output %n",
        "%x: analog[4]",
        {},
        "neuron %n: an IF neuron has no leak, got beta=0.9; use model=lif",
    ),
    (
        "  %n = neuron(%x) {v_th = -1.0} : spike[4]\n  output %n",
        "%x: analog[4]",
        {},
        "neuron %n: v_th=-1.0 must be > 0",
    ),
    (
        "  %n = neuron(%x) {max_spikes = 0} : spike[4]\n  output %n",
        "%x: analog[4]",
        {},
        "neuron %n: max_spikes=0 must be >= 1",
    ),
    (
        '  %s = scale(%x) params {bias = "b"} : analog[3,2]\n  output %s',
        "%x: analog[3,2]",
        {"b": (2,)},
        "scale %s: bias has 2 values, input has 3 channels",
    ),
    (
        '  %b = batchnorm(%x) params {mean = "m", var = "v"} : analog[3,2,2]\n  output %b',
        "%x: analog[3,2,2]",
        {"m": (3,), "v": (1,)},
        "batchnorm %b: var has shape [1], input has 3 channels",
    ),
    (
        "  %c = clip(%x) {lo = 1.0, hi = 1.0} : analog[4]\n  output %c",
        "%x: analog[4]",
        {},
        "clip %c: hi=1.0 must exceed lo=1.0",
    ),
    (
        "  %c = clip(%x) {levels = -2} : analog[4]\n  output %c",
        "%x: analog[4]",
        {},
        "clip %c: levels=-2 must be >= 0",
    ),
    (
        "  %r = reshape(%x) {shape = [3, 5]} : analog[3,5]\n  output %r",
        "%x: analog[16]",
        {},
        "reshape %r: cannot reshape analog[16] to [3, 5]",
    ),
    (
        "  %r = reshape(%x) {shape = [-4, -4]} : analog[16]\n  output %r",
        "%x: analog[16]",
        {},
        "reshape %r: cannot reshape analog[16] to [-4, -4]",
    ),
    (
        "  %p = avgpool2d(%x) {kernel = [3, 3]} : analog[1,1,1]\n  output %p",
        "%x: analog[1,2,2]",
        {},
        "avgpool2d %p: window [3, 3] does not fit input analog[1,2,2]",
    ),
    (
        "  %p = maxpool2d(%x) {dilation = [2, 2]} : analog[1,2,2]\n  output %p",
        "%x: analog[1,4,4]",
        {},
        "maxpool2d %p: dilated max pooling is not supported",
    ),
    (
        "  %p = spike_maxpool(%x) : spike[1,2]\n  output %p",
        "%x: spike[1,4]",
        {},
        "spike_maxpool %p: expects a [C,H,W] input, got spike[1,4]",
    ),
    (
        '  %r = readout(%x) {exit_rule = "confidence"} : analog[10]\n  output %r',
        "%x: analog[10]",
        {},
        "readout %r: exit_rule=confidence needs an exit_thresholds parameter",
    ),
]


@pytest.mark.parametrize(("body", "inputs", "params", "message"), OP_ERRORS, ids=[m for *_, m in OP_ERRORS])
def test_op_specific_errors(body: str, inputs: str, params: dict[str, tuple[int, ...]], message: str) -> None:
    graph = build(body, inputs=inputs)
    graph.params = {k: np.zeros(shape, np.float32) for k, shape in params.items()}
    rejects(graph, message)


def test_the_first_error_in_graph_order_is_reported() -> None:
    g = build("  %a = relu(%x) : spike[1,4,4]\n  %b = relu(%x, %x) : analog[1,4,4]\n  output %zz")
    rejects(g, "relu %a: declared type spike[1,4,4], inferred analog[1,4,4]")


def test_verify_does_not_change_the_graph() -> None:
    g = build(CONV, conv__weight=(2, 1, 3, 3))
    before = (g.copy(), dict(g.params))
    verify(g, require_event=False)
    assert g == before[0] and g.params == before[1]


# -- event-based graphs (require_event) -----------------------------------------------------------------------


def test_relu_is_rejected_in_an_event_based_graph() -> None:
    g = build(
        '  %e = encode(%x) {scheme = "rate"} : spike[1,4,4]\n  %r = relu(%e) : analog[1,4,4]\n  output %r'
    )
    verify(g)
    rejects(
        g, "relu %r: ANN-only op in an event-based graph; run the ann-to-snn pipeline", require_event=True
    )


def test_analog_input_to_a_synaptic_op_is_rejected() -> None:
    g = build(
        '  %l = linear(%x) params {weight = "w"} : analog[3]\n  output %l', inputs="%x: analog[4]", w=(3, 4)
    )
    verify(g)
    rejects(
        g,
        "linear %l: reads analog value %x (analog[4]); an event-based graph needs spikes here "
        "(lower-neurons, or encode-input for the input)",
        require_event=True,
    )


def test_analog_current_between_two_synaptic_ops_is_rejected() -> None:
    body = """\
  %e = encode(%x) {scheme = "ttfs"} : spike[4]
  %a = linear(%e) params {weight = "w"} : analog[4]
  %b = linear(%a) params {weight = "w"} : analog[4]
  output %b"""
    rejects(
        build(body, inputs="%x: analog[4]", w=(4, 4)),
        "linear %b: reads analog value %a (analog[4]); an event-based graph needs spikes here "
        "(lower-neurons, or encode-input for the input)",
        require_event=True,
    )


SNN = """\
  %e = encode(%x) : analog[1,4,4]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "conv.weight"} : analog[2,4,4]
  %n = neuron(%c) {max_spikes = 2} : burst<2>[2,4,4]
  %p = sumpool2d(%n) : analog[2,2,2]
  %m = neuron(%p) : spike[2,2,2]
  %s = add(%m, %m) : analog[2,2,2]
  %k = neuron(%s) : spike[2,2,2]
  %f = flatten(%k) : spike[8]
  %l = linear(%f) params {weight = "fc.weight"} : analog[3]
  %r = readout(%l) : analog[3]
  output %r"""


def test_direct_encoded_first_layer_is_accepted() -> None:
    g = build(SNN, attrs=" attributes {timesteps = 4}", conv__weight=(2, 1, 3, 3), fc__weight=(3, 8))
    verify(g, require_event=True)
    check_event_based(g)


def test_the_direct_exemption_looks_through_shape_only_ops() -> None:
    # encode(direct) -> identity/flatten -> first layer is how an MLP on images looks
    body = SNN.replace("%c = conv2d(%e)", "%c = conv2d(%i)").replace(
        "  %e = encode(%x) : analog[1,4,4]\n",
        "  %e = encode(%x) : analog[1,4,4]\n  %i = identity(%e) : analog[1,4,4]\n",
    )
    g = build(body, conv__weight=(2, 1, 3, 3), fc__weight=(3, 8))
    verify(g, require_event=True)


def test_the_direct_exemption_does_not_reach_past_a_synaptic_op() -> None:
    body = SNN.replace("%c = conv2d(%e)", "%c = conv2d(%i)").replace(
        "  %e = encode(%x) : analog[1,4,4]\n",
        '  %e = encode(%x) : analog[1,4,4]\n  %i = scale(%e) {factor = 2.0} : analog[1,4,4]\n',
    )
    g = build(body, conv__weight=(2, 1, 3, 3), fc__weight=(3, 8))
    verify(g)
    rejects(
        g,
        "conv2d %c: reads analog value %i (analog[1,4,4]); an event-based graph needs spikes here "
        "(lower-neurons, or encode-input for the input)",
        require_event=True,
    )


def test_a_rate_encoder_is_not_exempt_but_its_spikes_are_events() -> None:
    body = SNN.replace("%e = encode(%x) : analog", '%e = encode(%x) {scheme = "rate"} : spike')
    verify(build(body, conv__weight=(2, 1, 3, 3), fc__weight=(3, 8)), require_event=True)


# -- properties over generated graphs -------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(graphs(), st.data())
def test_moving_a_node_before_its_producer_is_rejected(graph: Graph, data: st.DataObject) -> None:
    position = {n.name: i for i, n in enumerate(graph.nodes)}
    movable = [n for n in graph.nodes if any(v in position for v in n.inputs)]
    if not movable:
        return
    node = data.draw(st.sampled_from(movable))
    first_producer = min(position[v] for v in node.inputs if v in position)
    graph.nodes.remove(node)
    graph.nodes.insert(first_producer, node)
    defined = {v for v, _ in graph.inputs} | {n.name for n in graph.nodes[:first_producer]}
    missing = next(v for v in node.inputs if v not in defined)
    rejects(graph, f"{node.op.name} %{node.name}: operand %{missing} is not defined before its use")


@settings(max_examples=50, deadline=None)
@given(graphs(), st.data())
def test_a_wrong_declared_type_is_rejected(graph: Graph, data: st.DataObject) -> None:
    if not graph.nodes:
        return
    node = data.draw(st.sampled_from(graph.nodes))
    right = node.type
    wrong = data.draw(
        st.sampled_from(
            [
                TensorType(right.shape + (1,), right.signal, burst=right.burst),
                TensorType(right.shape, Signal.ANALOG if right.is_event else Signal.SPIKE),
                TensorType(right.shape, Signal.BURST, burst=right.burst + 2),
            ]
        )
    )
    node.type = wrong
    rejects(graph, f"{node.op.name} %{node.name}: declared type {wrong}, inferred {right}")


@settings(max_examples=50, deadline=None)
@given(graphs(), st.data())
def test_a_parameter_missing_from_the_store_is_rejected(graph: Graph, data: st.DataObject) -> None:
    users = [(n, role, key) for n in graph.nodes for role, key in n.params.items()]
    if not users:
        return
    # the first user of the dropped key, in graph order, is the one reported
    _, _, key = data.draw(st.sampled_from(users))
    node, role, _ = next(u for u in users if u[2] == key)
    del graph.params[key]
    rejects(graph, f'{node.op.name} %{node.name}: parameter {role} = "{key}" is not in the parameter store')


def test_generated_graphs_stay_valid_after_copy() -> None:
    @settings(max_examples=20, deadline=None)
    @given(graphs())
    def check(graph: Graph) -> None:
        clone = graph.copy()
        clone.nodes.append(
            Node("extra_node", O.Identity(), (graph.outputs[0],), type=graph.value_type(graph.outputs[0]))
        )
        verify(graph)
        verify(clone)
        assert clone != graph

    check()


# -- defects found by these tests, now fixed: pinned against regressions ----------------------------------------


@pytest.mark.parametrize(
    ("body", "params"),
    [
        ("  %p = avgpool2d(%x) {stride = [0, 0]} : analog[1,2,2]\n  output %p", {}),
        (
            '  %c = conv2d(%x) {stride = [0, 1]} params {weight = "w"} : analog[1,2,2]\n  output %c',
            {"w": (1, 1, 3, 3)},
        ),
    ],
)
def test_zero_stride_is_a_verify_error(body: str, params: dict[str, tuple[int, ...]]) -> None:
    graph = build(body)
    graph.params = {k: np.zeros(s, np.float32) for k, s in params.items()}
    with pytest.raises(VerifyError):
        verify(graph)


@pytest.mark.parametrize(
    ("ty", "message"),
    [
        (TensorType((-3,)), "graph input %x: malformed type analog[-3]"),
        (TensorType((3,), Signal.BURST, burst=0), "graph input %x: malformed type burst<0>[3]"),
    ],
)
def test_malformed_input_type_is_a_verify_error(ty: TensorType, message: str) -> None:
    # the parser already refuses these texts; a graph built in Python must be caught too
    with pytest.raises(VerifyError, match="^" + re.escape(message) + "$"):
        verify(Graph("g", [("x", ty)], nodes=[], outputs=["x"]))


def test_per_channel_parameter_must_be_one_dimensional() -> None:
    g = build(
        '  %n = neuron(%x) {model = "lif"} params {beta = "b"} : spike[4]\n  output %n',
        inputs="%x: analog[4]",
    )
    g.params = {"b": np.ones((2, 2), np.float32)}
    with pytest.raises(VerifyError):
        verify(g)


def test_nan_threshold_is_a_verify_error() -> None:
    node = Node("n", O.Neuron(v_th=float("nan")), ("x",), type=spike(4))
    g = Graph("g", [("x", analog(4))], nodes=[node], outputs=["n"])
    with pytest.raises(VerifyError):
        verify(g)

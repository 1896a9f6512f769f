"""What made the Loihi target slow on large networks, and that the faster forms give the same answers.

DenseNet-like wiring (every layer's output read by several later joins, with the same conv geometry each
time; joins of many synapse groups) is what the mapper's shortcuts are for: output axons from one prefix
sum per population, conv profiles shared by edges of one geometry.  Each is checked against an
independent neuron-level count (tests/test_loihi_mapping.py's ``connections``), and the lowering's
shortcuts against the plain definitions they replace.
"""

import numpy as np
import pytest
from test_loihi_mapping import check_mapping, connections, small_chip

from snnc.backends.loihi.lower import WiringIndex, channel_exponents
from snnc.backends.loihi.mapping import (
    DEFAULT_PARTITION,
    ConvGeometry,
    Edge,
    EdgeKind,
    Network,
    Population,
    map_network,
)
from snnc.backends.loihi.partition import _Partitioner
from snnc.ir import parse


def dense_block(layers: int = 4, c0: int = 3, growth: int = 2, hw: int = 5) -> Network:
    """A DenseNet block as loihi-legalize lowers it: layer k is a join of one 3x3 conv group per earlier
    output, each read through a depthwise 1x1 part of its own (the concat's parts), so every output fans
    out to all later layers with one geometry per source shape; then a grouped strided transition and a
    dense readout."""
    pops = [Population(name="in", shape=(c0, hw, hw), on_chip=False, rate=0.3)]
    edges: list[Edge] = []
    shapes = {"in": (c0, hw, hw)}
    for k in range(layers):
        name, shape = f"l{k}", (growth, hw, hw)
        for j, (src, src_shape) in enumerate(list(shapes.items())):
            part = f"l{k}_part{j}"
            pops.append(Population(name=part, shape=src_shape, rate=0.1 + 0.05 * j, threshold_config=j % 3))
            edges.append(Edge(src=src, dst=part, kind=EdgeKind.CONV, geometry=ConvGeometry(
                in_shape=src_shape, out_shape=src_shape, kernel=(1, 1), groups=src_shape[0])))
            edges.append(Edge(src=part, dst=name, kind=EdgeKind.CONV, delay_bits=3 if j else 0,
                              geometry=ConvGeometry(in_shape=src_shape, out_shape=shape, kernel=(3, 3),
                                                    padding=(1, 1))))
        pops.append(Population(name=name, shape=shape, rate=0.2))
        shapes[name] = shape
    last = f"l{layers - 1}"
    pops.append(Population(name="trans", shape=(2 * growth, 3, 3), rate=0.1))
    edges.append(Edge(src=last, dst="trans", kind=EdgeKind.CONV, geometry=ConvGeometry(
        in_shape=shapes[last], out_shape=(2 * growth, 3, 3), kernel=(3, 3), stride=(2, 2), padding=(1, 1),
        groups=growth)))
    pops.append(Population(name="out", shape=(5,)))
    edges.append(Edge(src="trans", dst="out", kind=EdgeKind.DENSE, weight_bits=6))
    return Network(tuple(pops), tuple(edges))


def brute_out_pairs(net: Network, placed: dict, pop: str, a: int, b: int) -> int:
    """(source neuron in [a, b), destination range) pairs of ``pop``'s out-edges, from explicit synapses."""
    pops = {p.name: p for p in net.populations}
    total = 0
    for e in net.edges:
        if e.src != pop:
            continue
        starts = [(pc.start, pc.stop) for pc in placed[e.dst]]
        pairs = {(i, next(k for k, (s0, s1) in enumerate(starts) if s0 <= j < s1))
                 for i, j in connections(e, pops) if a <= i < b}
        total += len(pairs)
    return total


@pytest.mark.parametrize("strategy", DEFAULT_PARTITION, ids=lambda s: s.name)
def test_dense_block_maps_within_limits_and_counts_exactly(strategy) -> None:
    net = dense_block()
    chip = small_chip(neurons=40, synapse_bits=1 << 13, in_axons=240, out_axons=300, cx=32, vth=4)
    m = map_network(net, chip, partition=(strategy,))
    check_mapping(m, net)  # every core's output axons equal the neuron-level count


def test_out_demand_of_every_range_is_the_neuron_level_count() -> None:
    net = dense_block(layers=3)
    chip = small_chip(neurons=30, synapse_bits=1 << 13, in_axons=240, out_axons=300, cx=32, vth=4)
    part = _Partitioner(net, chip)
    cores, _, _, _ = part.run(1, DEFAULT_PARTITION[:1])
    assert cores
    rng = np.random.default_rng(0)
    checked = 0
    for p in net.populations:
        if not p.on_chip or not part.out_links[p.name]:
            continue
        for _ in range(6):
            a, b = sorted(int(v) for v in rng.integers(0, p.size + 1, size=2))
            if a == b:
                continue
            assert part._out_demand(p.name, a, b) == brute_out_pairs(net, part.placed, p.name, a, b), (p.name, a, b)
            checked += 1
    assert checked > 20


def test_edges_of_one_geometry_share_their_profiles() -> None:
    net = dense_block(layers=3)
    part = _Partitioner(net, small_chip())
    by_key: dict = {}
    for ln in part.links:
        if ln.conv is not None:
            by_key.setdefault((ln.edge.geometry, ln.bits), set()).add(id(ln.conv))
    assert all(len(ids) == 1 for ids in by_key.values())
    assert len(by_key) < sum(1 for ln in part.links if ln.conv is not None)  # some are shared


def _channel_exponents_by_definition(w_int: np.ndarray) -> np.ndarray | None:
    """The definition: for each e from the largest down, the channels whose every weight is a multiple of
    2^(e+1) and whose ``w >> e`` lies in the 8-bit range; the smallest such e wins."""
    rows = np.asarray(w_int, dtype=np.int64).reshape(len(w_int), -1)
    exps = np.full(len(rows), -1, dtype=np.int64)
    for e in range(7, -1, -1):
        ok = ((rows % (2 << e)) == 0).all(axis=1)
        ok &= ((rows >> e) >= -256).all(axis=1) & ((rows >> e) <= 254).all(axis=1)
        exps[ok] = e
    return None if (exps < 0).any() else exps


def test_channel_exponents_equal_their_definition() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        c = int(rng.integers(1, 6))
        mant = 2 * rng.integers(-128, 128, size=(c, int(rng.integers(0, 5)), 3))
        w = mant << rng.integers(0, 9, size=(c, 1, 1))  # up to one exponent too many
        if rng.random() < 0.3:
            w = w + rng.integers(0, 2, size=w.shape)  # odd weights: no exponent
        got, want = channel_exponents(w), _channel_exponents_by_definition(w)
        assert (got is None and want is None) or np.array_equal(got, want), (w, got, want)


def test_wiring_index_answers_as_the_graph() -> None:
    g = parse("""
graph @g(%x: analog[4]) {
  %a = linear(%x) {} params {weight = "w"} : analog[4]
  %b = neuron(%a) {} : spike[4]
  %c = add(%b, %b) : spike[4]
  %d = add(%c, %b) : spike[4]
  output %d
}
""")
    w = WiringIndex(g)
    for v in ["x", "a", "b", "c", "d", "nothing"]:
        assert w.producer(v) is g.producer(v)
        assert [n.name for n in w.users(v)] == [n.name for n in g.users(v)]
        assert w.only_user(v) is g.only_user(v)

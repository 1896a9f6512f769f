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


# ---------------------------------------------------------------- placement: the loops it replaced


def _improve_by_loops(placement, passes: int = 2, window: int = 24) -> np.ndarray:
    """CorePlacement.improve as it was written first: every cost summed anew by a plain loop."""
    nbrs = {i: [(j, d["weight"]) for j, d in placement.graph[i].items()] for i in placement.graph}
    slot = [int(x) for x in placement.slot_of]
    xy = [(int(x), int(y)) for x, y in placement.slot_tile]

    def local(i: int) -> float:
        x, y = xy[slot[i]]
        total = 0.0
        for j, w in nbrs[i]:
            xj, yj = xy[slot[j]]
            total += w * (abs(x - xj) + abs(y - yj))
        return total

    by_chip: dict[int, list[int]] = {}
    for i in placement.order:
        if nbrs[i]:
            by_chip.setdefault(int(placement.chip_of[i]), []).append(i)
    per_tile = placement.chip.topology.cores_per_tile
    for _ in range(passes):
        improved = False
        for members in by_chip.values():
            for ai, a in enumerate(members):
                for b in members[ai + 1 : ai + 1 + window]:
                    if slot[a] // per_tile == slot[b] // per_tile:
                        continue
                    before = local(a) + local(b)
                    slot[a], slot[b] = slot[b], slot[a]
                    if local(a) + local(b) < before - 1e-9:
                        improved = True
                    else:
                        slot[a], slot[b] = slot[b], slot[a]
        if not improved:
            break
    return np.array(slot, dtype=np.int64)


def _traffic_by_loops(placement, flows: dict, host: float) -> dict:
    out = dict.fromkeys(["spikes_per_step", "intra_core_spikes_per_step", "inter_core_spikes_per_step",
                         "inter_chip_spikes_per_step", "host_spikes_per_step", "spike_hops_per_step",
                         "ew_hops_per_step", "ns_hops_per_step", "chip_links_per_step"], 0.0)
    out["host_spikes_per_step"] = host
    for (i, j), s in flows.items():
        out["spikes_per_step"] += s
        if i == j:
            out["intra_core_spikes_per_step"] += s
            continue
        ew, ns, links = placement.hops(i, j)
        out["inter_core_spikes_per_step"] += s
        out["inter_chip_spikes_per_step"] += s if links else 0.0
        out["spike_hops_per_step"] += s * placement.cost(i, j)
        out["ew_hops_per_step"] += s * ew
        out["ns_hops_per_step"] += s * ns
        out["chip_links_per_step"] += s * links
    return out


def test_swaps_and_traffic_equal_the_plain_loops_bit_for_bit() -> None:
    """Cores with few and with many neighbours (both ways of summing), flows of very different sizes
    (so that the order of summation would show), several chips."""
    import networkx as nx

    from snnc.backends.loihi.hardware import load_chip
    from snnc.backends.loihi.placement import CorePlacement, traffic_graph

    rng = np.random.default_rng(3)
    chip = load_chip("loihi2")
    n = 300
    flows: dict[tuple[int, int], float] = {}
    for i in range(n):
        fan = 60 if i % 7 == 0 else 4  # every 7th core talks to many
        for j in rng.choice(n, size=fan, replace=False):
            flows[(i, int(j))] = float(rng.choice([1e-9, 1e-3, 0.37, 5e3])) * rng.random()
    graph = traffic_graph(flows, n)
    order = list(nx.utils.reverse_cuthill_mckee_ordering(graph))
    fast, slow = CorePlacement(graph, order, chip), CorePlacement(graph, order, chip)
    fast.improve()
    slow.slot_of = _improve_by_loops(slow)
    assert np.array_equal(fast.slot_of, slow.slot_of)
    assert not np.array_equal(fast.slot_of, CorePlacement(graph, order, chip).slot_of)  # swaps happened
    assert fast.traffic(flows, 0.5) == _traffic_by_loops(slow, flows, 0.5)


def test_netx_weight_format_equals_its_loop_over_bit_positions() -> None:
    """The shared trailing zero bits from one bitwise OR, as netx's loop of n full-array remainders finds them."""
    from snnc.backends.loihi.fixed_point import netx_weight_format

    def by_loop(w_int: np.ndarray) -> tuple:
        w = np.clip(np.asarray(w_int, dtype=np.int64), -256, 254)
        n = 8
        while n > 0 and np.any(w % (1 << n)):
            n -= 1
        return n

    rng = np.random.default_rng(2)
    for _ in range(300):
        w = rng.integers(-128, 128, size=int(rng.integers(1, 20))) << int(rng.integers(0, 9))
        if not w.any():
            continue
        bits, exp, mode = netx_weight_format(w)
        # bits = 8 - scale_bits - n: recover n from the scale the format used, and compare
        signed = 1 if mode.name == "MIXED" else 0
        assert bits == 8 - (-exp) - (by_loop(w) - signed), (w, bits, exp, mode)


def test_mapping_reports_progress_after_each_strategy_and_the_placement() -> None:
    net = dense_block(layers=2)
    chip = small_chip(neurons=40, synapse_bits=1 << 13, in_axons=240, out_axons=300, cx=32, vth=4)
    calls: list[int] = []
    strategies = DEFAULT_PARTITION[:2]
    m = map_network(net, chip, partition=strategies, advance=lambda: calls.append(1))
    tried = 1 if m.cores_used <= 1.1 * m.lower_bound else len(strategies)  # it stops once within 10 %
    assert len(calls) == tried + 1

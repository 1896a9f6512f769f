"""Core and chip mapping: limits (checked against an independent neuron-level count), lower bound,
board fit, JSON and plot."""

import dataclasses
import json
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snnc.backends.loihi import mapping as mapping_module
from snnc.backends.loihi.bitacc import LayerKind, LifParams, QLayer
from snnc.backends.loihi.hardware import CoreLimits, Resource, load_chip
from snnc.backends.loihi.mapping import (
    RESOURCES,
    ConvGeometry,
    DoesNotFitError,
    Edge,
    EdgeKind,
    Network,
    Population,
    estimate_cost,
    map_network,
    network_from_layers,
    packed_bits,
)
from snnc.errors import TargetError, UserError

LOIHI1 = load_chip("loihi1")


def small_chip(neurons=64, synapse_bits=1 << 14, in_axons=200, out_axons=400, cx=32, vth=8, fmts=8, cores=16):
    base = LOIHI1
    core = CoreLimits(neurons, synapse_bits, in_axons, out_axons, cx, vth, fmts)
    topo = dataclasses.replace(
        base.topology, cores_per_chip=cores, mesh_tiles_x=2, mesh_tiles_y=cores // 8 or 1
    )
    return dataclasses.replace(base, core=core, topology=topo)


# ---------------------------------------------------------------- independent accounting


def xyc_index(c, y, x, shape):
    """Neuron index of (c, y, x) in lava (x, y, c) order."""
    _, h, _ = shape
    return (x * h + y) * shape[0] + c


def connections(edge, pops):
    """Explicit (source index, destination index) synapses of an edge, in population neuron orders."""
    src, dst = pops[edge.src], pops[edge.dst]
    if edge.kind is EdgeKind.DENSE:
        return [(i, j) for j in range(dst.size) for i in range(src.size)]
    g = edge.geometry
    (ci_n, h, w), (co_n, ho, wo) = g.in_shape, g.out_shape
    cg, og = ci_n // g.groups, co_n // g.groups
    out = []
    for co in range(co_n):
        for yo in range(ho):
            for xo in range(wo):
                j = xyc_index(co, yo, xo, g.out_shape)
                for cj in range(cg):
                    ci = (co // og) * cg + cj
                    for ky in range(g.kernel[0]):
                        for kx in range(g.kernel[1]):
                            yi = yo * g.stride[0] - g.padding[0] + ky * g.dilation[0]
                            xi = xo * g.stride[1] - g.padding[1] + kx * g.dilation[1]
                            if 0 <= yi < h and 0 <= xi < w:
                                out.append((xyc_index(ci, yi, xi, g.in_shape), j))
    return out


def brute_force_usage(mapping, net):
    """Per-core usage recomputed from explicit synapse lists and the mapping's ranges only."""
    chip = mapping.chip
    enc = chip.synapse
    pops = {p.name: p for p in net.populations}
    where = {}  # (pop, neuron) -> piece id
    pieces = []
    for core in mapping.cores:
        for pc in core.pieces:
            pid = len(pieces)
            pieces.append((core.index, pc))
            for k in range(pc.start, pc.stop):
                assert (pc.population, k) not in where, "a neuron is mapped twice"
                where[(pc.population, k)] = pid
    for p in net.populations:
        if p.on_chip:
            assert all((p.name, k) in where for k in range(p.size)), f"{p.name}: unmapped neurons"
    usage = {c.index: dict.fromkeys(RESOURCES, 0) for c in mapping.cores}
    for c in mapping.cores:
        usage[c.index][Resource.NEURONS] = sum(pc.stop - pc.start for pc in c.pieces)
    for e in net.edges:
        wb = min(b for b in enc.allowed_weight_bits if b >= e.weight_bits)
        per_syn = wb + enc.delay_bits + (enc.index_bits if e.kind is EdgeKind.CONV else 0)
        lists = {}  # (source, piece) -> synapse count
        dests = {}  # source -> set of pieces
        for i, j in connections(e, pops):
            pid = where[(e.dst, j)]
            lists[(i, pid)] = lists.get((i, pid), 0) + 1
            dests.setdefault(i, set()).add(pid)
        for (_, pid), n in lists.items():
            core = pieces[pid][0]
            usage[core][Resource.INPUT_AXONS] += 1
            usage[core][Resource.SYNAPSE_BITS] += int(packed_bits(np.array([n]), per_syn, enc)[0])
        if pops[e.src].on_chip:
            for i, pids in dests.items():
                usage[pieces[where[(e.src, i)]][0]][Resource.OUTPUT_AXONS] += len(pids)
    return usage


def check_mapping(mapping, net):
    """Every core within every limit, and the mapping's own counts equal the independent ones."""
    assert mapping.violations() == []
    ref = brute_force_usage(mapping, net)
    for c in mapping.cores:
        for r in (Resource.NEURONS, Resource.SYNAPSE_BITS, Resource.INPUT_AXONS, Resource.OUTPUT_AXONS):
            assert c.usage[r] == ref[c.index][r], (c.index, r, c.usage[r], ref[c.index][r])
        for r in RESOURCES:
            assert c.usage[r] <= mapping.chip.core.capacity(r), (c.index, r)
        pops_here = [pc.population for pc in c.pieces]
        assert len(pops_here) == len(set(pops_here)), "a population has two ranges on one core"
    assert mapping.lower_bound <= mapping.cores_used
    idx = [c.index for c in mapping.cores]
    assert len(set(idx)) == len(idx)


# ---------------------------------------------------------------- unit cases


def test_packed_bits_follow_nengo_loihi_packing():
    enc = LOIHI1.synapse
    assert packed_bits(np.array([0, 1, 54, 55, 64, 65]), 8, enc).tolist() == [0, 64, 448, 512, 576, 640]
    assert packed_bits(np.array([128]), 18, enc).tolist() == [2 * 1216]


def mlp():
    pops = (
        Population("in", (784,), on_chip=False, rate=0.1),
        Population("h1", (1000,), rate=0.05),
        Population("h2", (1000,), rate=0.05),
        Population("out", (10,), rate=0.05),
    )
    edges = (
        Edge("in", "h1", EdgeKind.DENSE),
        Edge("h1", "h2", EdgeKind.DENSE),
        Edge("h2", "out", EdgeKind.DENSE),
    )
    return Network(pops, edges)


def test_mlp_within_ten_percent_of_lower_bound():
    m = map_network(mlp(), LOIHI1)
    assert m.violations() == []
    assert m.cores_used <= 1.1 * m.lower_bound
    assert m.lower_bound_by_resource[Resource.SYNAPSE_BITS] == m.lower_bound
    covered = sorted((a, b) for a, b, _ in m.populations["h1"])
    assert covered[0][0] == 0 and covered[-1][1] == 1000
    assert all(x[1] == y[0] for x, y in zip(covered, covered[1:], strict=False))
    js = json.loads(json.dumps(m.to_json()))
    assert js["cores_used"] == m.cores_used and len(js["cores"]) == m.cores_used
    assert set(js["cores"][0]["utilisation"]) == {r.value for r in RESOURCES}
    assert js["traffic"]["host_spikes_per_step"] == pytest.approx(784 * 0.1 * len(m.populations["h1"]))
    cost = estimate_cost(m)
    assert cost["synops_per_step"] == pytest.approx(784 * 1000 * 0.1 + 1000 * 1000 * 0.05 + 1000 * 10 * 0.05)
    assert cost["energy_pj_per_step"] > cost["energy_pj_synaptic"] > 0 and cost["time_ns_per_step"] > 0


def conv_net(c=4, h=10, w=9):
    g1 = ConvGeometry((2, h, w), (c, h, w), (3, 3), (1, 1), (1, 1))
    g2 = ConvGeometry(
        (c, h, w), (c, (h - 1) // 2 + 1, (w - 1) // 2 + 1), (3, 3), (2, 2), (1, 1), (1, 1), groups=2
    )
    pops = (
        Population("in", (2, h, w), on_chip=False, rate=0.2),
        Population("c1", (c, h, w), rate=0.1),
        Population("c2", g2.out_shape, rate=0.1),
        Population("fc", (7,), rate=0.1),
    )
    edges = (
        Edge("in", "c1", EdgeKind.CONV, geometry=g1),
        Edge("c1", "c2", EdgeKind.CONV, geometry=g2),
        Edge("c2", "fc", EdgeKind.DENSE),
    )
    return Network(pops, edges)


def test_conv_counts_equal_an_independent_neuron_level_count():
    net = conv_net()
    chip = small_chip(neurons=40, synapse_bits=1 << 15, in_axons=120, out_axons=300)
    m = map_network(net, chip)
    assert m.cores_used > 4  # the small cores force splits
    check_mapping(m, net)


def test_board_fit_and_error():
    m = map_network(mlp(), LOIHI1)
    assert m.fits("kapoho-bay")
    chip = small_chip(cores=8)
    m = map_network(conv_net(), dataclasses.replace(chip, boards={"tiny": 1}))
    assert m.chips_used >= 2 and not m.fits("tiny")
    with pytest.raises(DoesNotFitError) as info:
        m.require_fits("tiny")
    assert isinstance(info.value, TargetError)
    assert f"needs {m.cores_used} cores on {m.chips_used}" in str(info.value)
    assert info.value.chips_needed == m.chips_used
    with pytest.raises(UserError, match="unknown board"):
        m.fits("nope")


def test_fan_in_beyond_a_core_is_a_target_error():
    pops = (Population("in", (5000,), on_chip=False), Population("h", (10,)))
    with pytest.raises(TargetError, match="population 'h'.*input_axons 5000 > 4096"):
        map_network(Network(pops, (Edge("in", "h", EdgeKind.DENSE),)), LOIHI1)


def test_bad_networks_are_user_errors():
    pops = (Population("a", (4,)), Population("a", (4,)))
    with pytest.raises(UserError, match="repeat"):
        map_network(Network(pops, ()), LOIHI1)
    pops = (Population("a", (1, 4, 4)), Population("b", (1, 4, 4)))
    bad = Edge("a", "b", EdgeKind.CONV, geometry=ConvGeometry((1, 4, 4), (1, 4, 4), (3, 3)))
    with pytest.raises(UserError, match="inconsistent conv geometry"):
        map_network(Network(pops, (bad,)), LOIHI1)


def test_configuration_entries_limit_sharing():
    pops = tuple(Population(f"p{i}", (3,), compartment_config=i) for i in range(4))
    chip = small_chip(cx=2)
    m = map_network(Network(pops, ()), chip)
    assert m.cores_used == 2 and all(c.usage[Resource.COMPARTMENT_CONFIGS] <= 2 for c in m.cores)


def test_recurrent_edge_is_mapped_within_limits():
    pops = (Population("in", (30,), on_chip=False), Population("r", (120,), rate=0.1))
    net = Network(pops, (Edge("in", "r", EdgeKind.DENSE), Edge("r", "r", EdgeKind.DENSE)))
    m = map_network(net, small_chip(neurons=32, synapse_bits=1 << 14, in_axons=400, out_axons=400))
    check_mapping(m, net)


def test_network_from_layers_and_plot(tmp_path):
    lif = LifParams(4095, 0, 10)
    layers = [
        QLayer("in", LayerKind.INPUT, (2, 6, 6)),
        QLayer(
            "conv",
            LayerKind.CONV,
            (4, 6, 6),
            weight=np.ones((4, 2, 3, 3), np.int64) * 2,
            padding=(1, 1),
            lif=lif,
        ),
        QLayer("pool", LayerKind.POOL, (4, 3, 3), weight=8, kernel=(2, 2), stride=(2, 2), lif=lif),
        QLayer("flat", LayerKind.FLATTEN, (36,)),
        QLayer(
            "fc", LayerKind.DENSE, (10,), weight=np.full((10, 36), 64, np.int64), lif=LifParams(4095, 0, 3)
        ),
    ]
    net = network_from_layers(layers, rates={"in": 0.3, "conv": 0.1})
    assert [p.name for p in net.populations] == ["in", "conv", "pool", "fc"]
    pool_edge = net.edges[1]
    assert pool_edge.geometry.groups == 4 and pool_edge.geometry.kernel == (2, 2)
    assert net.edges[2].kind is EdgeKind.DENSE and net.edges[2].weight_bits == 1  # one distinct weight value
    m = map_network(net, LOIHI1)
    check_mapping(m, net)
    from snnc.backends.loihi.plots import plot_utilisation

    png = plot_utilisation(m, tmp_path / "util.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- property test


@st.composite
def networks(draw):
    """Random chains of conv / pool / dense populations with random sizes and geometry."""
    c = draw(st.integers(1, 3))
    h = draw(st.integers(3, 7))
    w = draw(st.integers(3, 7))
    shape = (c, h, w)
    pops = [Population("in", shape, on_chip=False, rate=draw(st.floats(0, 1)))]
    edges = []
    for i in range(draw(st.integers(1, 3))):
        name = f"p{i}"
        kind = draw(st.sampled_from(["conv", "pool", "dense"])) if len(shape) == 3 else "dense"
        if kind == "dense":
            out = (draw(st.integers(1, 25)),)
            edge = Edge(pops[-1].name, name, EdgeKind.DENSE, weight_bits=draw(st.sampled_from([1, 4, 8])))
        else:
            k = draw(st.integers(1, 3))
            s = draw(st.integers(1, 2))
            p = draw(st.integers(0, k - 1))
            groups = (
                shape[0]
                if kind == "pool"
                else draw(st.sampled_from([g for g in (1, 2, 3) if shape[0] % g == 0]))
            )
            c_out = shape[0] if kind == "pool" else groups * draw(st.integers(1, 3))
            ho, wo = (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1
            if ho < 1 or wo < 1:
                break
            out = (c_out, ho, wo)
            edge = Edge(
                pops[-1].name,
                name,
                EdgeKind.CONV,
                geometry=ConvGeometry(shape, out, (k, k), (s, s), (p, p), (1, 1), groups),
            )
        pops.append(
            Population(name, out, rate=draw(st.floats(0, 1)), compartment_config=draw(st.integers(0, 2)))
        )
        edges.append(edge)
        shape = out
    return Network(tuple(pops), tuple(edges))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    net=networks(),
    neurons=st.integers(4, 64),
    syn_words=st.integers(8, 200),
    in_axons=st.integers(30, 300),
    out_axons=st.integers(60, 600),
    strategy=st.sampled_from(mapping_module._STRATEGIES),
)
def test_every_core_respects_every_limit(net, neurons, syn_words, in_axons, out_axons, strategy):
    chip = small_chip(
        neurons=neurons, synapse_bits=64 * syn_words, in_axons=in_axons, out_axons=out_axons, cx=2, cores=8
    )
    with mock.patch.object(mapping_module, "_STRATEGIES", (strategy,)):
        try:
            m = map_network(net, chip)
        except TargetError as e:
            assert "a single neuron does not fit" in str(e)
            return
    check_mapping(m, net)


@pytest.mark.parametrize("strategy", mapping_module._STRATEGIES)
def test_each_strategy_counts_exactly(strategy):
    net = conv_net(c=6, h=12, w=11)
    with mock.patch.object(mapping_module, "_STRATEGIES", (strategy,)):
        m = map_network(net, small_chip(neurons=48, synapse_bits=1 << 15, in_axons=250, out_axons=400))
    check_mapping(m, net)

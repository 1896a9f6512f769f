"""Core and chip mapping: limits (checked against an independent neuron-level count), lower bound,
board fit, JSON and plot."""

import dataclasses
import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from snnc.backends.loihi.bitacc import LayerKind, LifParams, QLayer
from snnc.backends.loihi.hardware import CoreLimits, Resource, load_chip
from snnc.backends.loihi.mapping import (
    DEFAULT_PARTITION,
    DEFAULT_PLACEMENT,
    RESOURCES,
    ConvGeometry,
    DoesNotFitError,
    Edge,
    EdgeKind,
    Network,
    OpenerFill,
    Population,
    RcmSnake,
    estimate_cost,
    map_network,
    network_from_layers,
    packed_bits,
)
from snnc.errors import TargetError, UserError

LOIHI1 = load_chip("loihi1")


def small_chip(neurons=64, synapse_bits=1 << 14, in_axons=200, out_axons=400, cx=32, vth=8, fmts=8, cores=16):
    base = LOIHI1
    core = CoreLimits(
        neurons=neurons,
        synapse_bits=synapse_bits,
        input_axons=in_axons,
        output_axons=out_axons,
        compartment_configs=cx,
        threshold_configs=vth,
        synapse_formats=fmts,
    )
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
        per_syn = wb + max(enc.delay_bits, e.delay_bits) + (enc.index_bits if e.kind is EdgeKind.CONV else 0)
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
        Population(name="in", shape=(784,), on_chip=False, rate=0.1),
        Population(name="h1", shape=(1000,), rate=0.05),
        Population(name="h2", shape=(1000,), rate=0.05),
        Population(name="out", shape=(10,), rate=0.05),
    )
    edges = (
        Edge(src="in", dst="h1", kind=EdgeKind.DENSE),
        Edge(src="h1", dst="h2", kind=EdgeKind.DENSE),
        Edge(src="h2", dst="out", kind=EdgeKind.DENSE),
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
    g1 = ConvGeometry(in_shape=(2, h, w), out_shape=(c, h, w), kernel=(3, 3), stride=(1, 1), padding=(1, 1))
    g2 = ConvGeometry(
        in_shape=(c, h, w),
        out_shape=(c, (h - 1) // 2 + 1, (w - 1) // 2 + 1),
        kernel=(3, 3),
        stride=(2, 2),
        padding=(1, 1),
        dilation=(1, 1),
        groups=2,
    )
    pops = (
        Population(name="in", shape=(2, h, w), on_chip=False, rate=0.2),
        Population(name="c1", shape=(c, h, w), rate=0.1),
        Population(name="c2", shape=g2.out_shape, rate=0.1),
        Population(name="fc", shape=(7,), rate=0.1),
    )
    edges = (
        Edge(src="in", dst="c1", kind=EdgeKind.CONV, geometry=g1),
        Edge(src="c1", dst="c2", kind=EdgeKind.CONV, geometry=g2),
        Edge(src="c2", dst="fc", kind=EdgeKind.DENSE),
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
    pops = (Population(name="in", shape=(5000,), on_chip=False), Population(name="h", shape=(10,)))
    with pytest.raises(TargetError, match="population 'h'.*input_axons 5000 > 4096"):
        map_network(Network(pops, (Edge(src="in", dst="h", kind=EdgeKind.DENSE),)), LOIHI1)


def test_bad_networks_are_user_errors():
    pops = (Population(name="a", shape=(4,)), Population(name="a", shape=(4,)))
    with pytest.raises(UserError, match="repeat"):
        map_network(Network(pops, ()), LOIHI1)
    pops = (Population(name="a", shape=(1, 4, 4)), Population(name="b", shape=(1, 4, 4)))
    geometry = ConvGeometry(in_shape=(1, 4, 4), out_shape=(1, 4, 4), kernel=(3, 3))
    bad = Edge(src="a", dst="b", kind=EdgeKind.CONV, geometry=geometry)
    with pytest.raises(UserError, match="inconsistent conv geometry"):
        map_network(Network(pops, (bad,)), LOIHI1)


def test_configuration_entries_limit_sharing():
    pops = tuple(Population(name=f"p{i}", shape=(3,), compartment_config=i) for i in range(4))
    chip = small_chip(cx=2)
    m = map_network(Network(pops, ()), chip)
    assert m.cores_used == 2 and all(c.usage[Resource.COMPARTMENT_CONFIGS] <= 2 for c in m.cores)


def test_recurrent_edge_is_mapped_within_limits():
    pops = (Population(name="in", shape=(30,), on_chip=False), Population(name="r", shape=(120,), rate=0.1))
    edges = (Edge(src="in", dst="r", kind=EdgeKind.DENSE), Edge(src="r", dst="r", kind=EdgeKind.DENSE))
    net = Network(pops, edges)
    m = map_network(net, small_chip(neurons=32, synapse_bits=1 << 14, in_axons=400, out_axons=400))
    check_mapping(m, net)


def test_network_from_layers_and_plot(tmp_path):
    lif = LifParams(du=4095, dv=0, vth_mant=10)
    layers = [
        QLayer(name="in", kind=LayerKind.INPUT, shape=(2, 6, 6)),
        QLayer(
            name="conv",
            kind=LayerKind.CONV,
            shape=(4, 6, 6),
            weight=np.ones((4, 2, 3, 3), np.int64) * 2,
            padding=(1, 1),
            lif=lif,
        ),
        QLayer(
            name="pool", kind=LayerKind.POOL, shape=(4, 3, 3), weight=8, kernel=(2, 2), stride=(2, 2), lif=lif
        ),
        QLayer(name="flat", kind=LayerKind.FLATTEN, shape=(36,)),
        QLayer(
            name="fc",
            kind=LayerKind.DENSE,
            shape=(10,),
            weight=np.full((10, 36), 64, np.int64),
            lif=LifParams(du=4095, dv=0, vth_mant=3),
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
    pops = [Population(name="in", shape=shape, on_chip=False, rate=draw(st.floats(0, 1)))]
    edges = []
    for i in range(draw(st.integers(1, 3))):
        name = f"p{i}"
        kind = draw(st.sampled_from(["conv", "pool", "dense"])) if len(shape) == 3 else "dense"
        if kind == "dense":
            out = (draw(st.integers(1, 25)),)
            bits = draw(st.sampled_from([1, 4, 8]))
            edge = Edge(src=pops[-1].name, dst=name, kind=EdgeKind.DENSE, weight_bits=bits)
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
            geometry = ConvGeometry(
                in_shape=shape,
                out_shape=out,
                kernel=(k, k),
                stride=(s, s),
                padding=(p, p),
                dilation=(1, 1),
                groups=groups,
            )
            edge = Edge(src=pops[-1].name, dst=name, kind=EdgeKind.CONV, geometry=geometry)
        pops.append(
            Population(
                name=name, shape=out, rate=draw(st.floats(0, 1)), compartment_config=draw(st.integers(0, 2))
            )
        )
        edges.append(edge)
        shape = out
    return Network(tuple(pops), tuple(edges))


def single_neuron_demand(net, enc):
    """Per population, the most input axons, synapse bits and output axons any one of its neurons needs
    alone on a core, counted from the explicit synapse lists (output axons: destination neurons fed, an
    upper bound on the destination ranges)."""
    pops = {p.name: p for p in net.populations}
    axons = {p.name: np.zeros(p.size, np.int64) for p in net.populations}
    bits = {p.name: np.zeros(p.size, np.int64) for p in net.populations}
    fan_out = {p.name: np.zeros(p.size, np.int64) for p in net.populations}
    for e in net.edges:
        wb = min(b for b in enc.allowed_weight_bits if b >= e.weight_bits)
        per_syn = wb + max(enc.delay_bits, e.delay_bits) + (enc.index_bits if e.kind is EdgeKind.CONV else 0)
        lists = {}  # (source, destination) -> synapses
        for i, j in connections(e, pops):
            lists[(i, j)] = lists.get((i, j), 0) + 1
        for (i, j), n in lists.items():
            axons[e.dst][j] += 1
            bits[e.dst][j] += int(packed_bits(np.array([n]), per_syn, enc)[0])
            fan_out[e.src][i] += 1
    return {
        p.name: (int(axons[p.name].max()), int(bits[p.name].max()), int(fan_out[p.name].max()))
        for p in net.populations
        if p.on_chip
    }


@st.composite
def mapping_cases(draw):
    """(network, chip, populations that cannot be mapped).  The chip's limits are drawn around what one
    neuron needs: mostly every neuron fits an empty core (the mapping must succeed), else the input axons
    or synapse bits are too few for some neuron (the mapper must refuse, naming such a population)."""
    net = draw(networks())
    demand = single_neuron_demand(net, LOIHI1.synapse)
    max_in = max(a for a, _, _ in demand.values())
    max_bits = max(b for _, b, _ in demand.values())
    max_out = max(o for _, _, o in demand.values())
    fits = draw(st.integers(0, 3)) > 0
    short = (
        None
        if fits
        else draw(st.sampled_from(["synapse_bits", "input_axons"] if max_in > 1 else ["synapse_bits"]))
    )
    if short == "input_axons":
        in_axons = draw(st.integers(max(1, max_in // 2), max_in - 1))
    else:
        in_axons = draw(st.integers(max_in, max_in + 270))
    if short == "synapse_bits":
        synapse_bits = draw(st.integers(max(1, max_bits // 2), max_bits - 1))
    else:
        synapse_bits = draw(st.integers(max_bits, max_bits + 64 * 200))
    out_axons = draw(st.integers(max(1, max_out), max_out + 540))  # a chip has at least one of each
    chip = small_chip(
        neurons=draw(st.integers(4, 64)),
        synapse_bits=synapse_bits,
        in_axons=in_axons,
        out_axons=out_axons,
        cx=2,
        cores=8,
    )
    too_big = {name for name, (a, b, _) in demand.items() if a > in_axons or b > synapse_bits}
    assert fits == (not too_big)
    return net, chip, too_big


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mapping_cases(), strategy=st.sampled_from(DEFAULT_PARTITION))
def test_every_core_respects_every_limit(case, strategy):
    net, chip, too_big = case
    event("refused: a neuron exceeds a core" if too_big else "mapped")
    if too_big:
        with pytest.raises(TargetError, match="a single neuron does not fit") as info:
            map_network(net, chip, partition=(strategy,))
        named = re.match(r"population '([^']*)'", str(info.value))
        assert named is not None and named.group(1) in too_big, (str(info.value), too_big)
    else:
        m = map_network(net, chip, partition=(strategy,))
        assert m.partition_strategy == strategy.name
        check_mapping(m, net)


@pytest.mark.parametrize("strategy", DEFAULT_PARTITION, ids=lambda s: s.name)
def test_each_strategy_counts_exactly(strategy):
    net = conv_net(c=6, h=12, w=11)
    m = map_network(
        net,
        small_chip(neurons=48, synapse_bits=1 << 15, in_axons=250, out_axons=400),
        partition=(strategy,),
    )
    assert m.partition_strategy == strategy.name
    check_mapping(m, net)


def test_strategies_are_checked_and_tried_in_turn():
    with pytest.raises(ValueError, match="at least one partition strategy"):
        map_network(mlp(), LOIHI1, partition=())
    with pytest.raises(ValueError, match="fraction=1.5"):
        OpenerFill(name="bad", fraction=1.5)
    net = conv_net(c=6, h=12, w=11)
    chip = small_chip(neurons=48, synapse_bits=1 << 15, in_axons=250, out_axons=400)
    alone = {s.name: map_network(net, chip, partition=(s,)).cores_used for s in DEFAULT_PARTITION}
    m = map_network(net, chip)
    assert m.cores_used <= alone[DEFAULT_PARTITION[0].name]  # the first is tried, a better one kept
    assert alone[m.partition_strategy] == m.cores_used
    assert m.placement_strategy == DEFAULT_PLACEMENT.name
    no_swaps = map_network(net, chip, placement=RcmSnake(name="no-swaps", swap_passes=0))
    assert no_swaps.placement_strategy == "no-swaps" and no_swaps.cores_used == m.cores_used
    hops = m.traffic["spike_hops_per_step"]
    assert hops <= no_swaps.traffic["spike_hops_per_step"] + 1e-9  # swaps only ever lower the hops

"""Loihi core mapping: cores used vs the lower bound, chips, traffic, time.

Networks: synthetic ones (spike rates fixed per population, stated in the JSON) and the digits CNN and
MLP (examples/digits) compiled by the ann-to-loihi pipeline at T = 8, with the spike rates their
quantised graphs have on 256 calibration images.  Prints a table and writes
benchmarks/results/loihi_mapping.json; run with OMP_WAIT_POLICY=PASSIVE on a quiet machine.

    python benchmarks/loihi_mapping.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snnc.backends.loihi.hardware import load_chip  # noqa: E402
from snnc.backends.loihi.mapping import (  # noqa: E402
    ConvGeometry,
    Edge,
    EdgeKind,
    Network,
    Population,
    estimate_cost,
    map_network,
    network_from_layers,
)

RATE_IN, RATE = 0.1, 0.05  # spikes per neuron per timestep


def mlp() -> Network:
    """784-1000-1000-10, dense, 8-bit weights."""
    sizes = [784, 1000, 1000, 10]
    pops = [Population(name="in", shape=(784,), on_chip=False, rate=RATE_IN)]
    pops += [Population(name=f"fc{i}", shape=(n,), rate=RATE) for i, n in enumerate(sizes[1:], 1)]
    edges = [Edge(src=pops[i].name, dst=pops[i + 1].name, kind=EdgeKind.DENSE) for i in range(len(pops) - 1)]
    return Network(tuple(pops), tuple(edges))


def conv(shape, c_out, k=3, s=1, p=1, groups=1):
    h, w = (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1
    return ConvGeometry(
        in_shape=shape,
        out_shape=(c_out, h, w),
        kernel=(k, k),
        stride=(s, s),
        padding=(p, p),
        dilation=(1, 1),
        groups=groups,
    )


def convnet() -> Network:
    """A DVS-gesture-sized conv net: 2x64x64 -> conv16 -> pool2 -> conv32 -> pool2 -> conv64 -> pool2 ->
    dense 256 -> dense 11 (sum pools are depthwise convs with one weight)."""
    pops = [Population(name="in", shape=(2, 64, 64), on_chip=False, rate=RATE_IN)]
    edges = []
    shape, prev = (2, 64, 64), "in"
    for name, geom in [
        ("conv1", lambda s: conv(s, 16)),
        ("pool1", lambda s: conv(s, s[0], k=2, s=2, p=0, groups=s[0])),
        ("conv2", lambda s: conv(s, 32)),
        ("pool2", lambda s: conv(s, s[0], k=2, s=2, p=0, groups=s[0])),
        ("conv3", lambda s: conv(s, 64)),
        ("pool3", lambda s: conv(s, s[0], k=2, s=2, p=0, groups=s[0])),
    ]:
        g = geom(shape)
        pops.append(Population(name=name, shape=g.out_shape, rate=RATE))
        edges.append(Edge(src=prev, dst=name, kind=EdgeKind.CONV, geometry=g))
        shape, prev = g.out_shape, name
    for name, n in [("fc1", 256), ("fc2", 11)]:
        pops.append(Population(name=name, shape=(n,), rate=RATE))
        edges.append(Edge(src=prev, dst=name, kind=EdgeKind.DENSE))
        prev = name
    return Network(tuple(pops), tuple(edges))


def million() -> Network:
    """1,048,576 neurons: four 3x3 conv layers of 16 x 128 x 128 on a 2 x 128 x 128 input."""
    pops = [Population(name="in", shape=(2, 128, 128), on_chip=False, rate=RATE_IN)]
    edges = []
    shape, prev = (2, 128, 128), "in"
    for i in range(4):
        g = conv(shape, 16)
        pops.append(Population(name=f"conv{i}", shape=g.out_shape, rate=RATE))
        edges.append(Edge(src=prev, dst=f"conv{i}", kind=EdgeKind.CONV, geometry=g))
        shape, prev = g.out_shape, f"conv{i}"
    return Network(tuple(pops), tuple(edges))


def digits(arch: str) -> Network:
    """The digits model compiled for Loihi (ann-to-loihi at T = 8), with its calibrated spike rates."""
    import numpy as np

    from snnc.backends.loihi.lower import calibrated_rates, lower
    from snnc.backends.torch.simulator import TorchSimulator
    from snnc.frontend.files import load_model
    from snnc.pass_manager import CalibrationData, PassContext, PassManager

    here = ROOT / "examples" / "digits"
    with np.load(here / "train.npz") as f:
        x, y = f["x"], f["y"]
    ctx = PassContext(calibration=CalibrationData(x, y), simulator=TorchSimulator(), timesteps=8)
    graph = PassManager.parse("ann-to-loihi").run(load_model(here / f"{arch}.pt2").graph, ctx)
    net = lower(graph)
    return network_from_layers(net.layers, calibrated_rates(ctx, graph, net, 256))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 1 M-neuron network")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loihi_mapping.json"))
    args = parser.parse_args()
    cases = [
        ("digits-cnn", lambda: digits("cnn")),
        ("digits-mlp", lambda: digits("mlp")),
        ("mlp-784-1000-1000-10", mlp),
        ("convnet-dvs64", convnet),
    ]
    if not args.quick:
        cases.append(("synthetic-1M-conv", million))
    rows = []
    header = f"{'network':22} {'chip':7} {'neurons':>9} {'cores':>6} {'bound':>6} {'ratio':>6} {'chips':>5} {'spikes/step':>12} {'hops/step':>12} {'x-chip/step':>12} {'time s':>7}"
    print(header)
    print("-" * len(header))
    for name, build in cases:
        net = build()
        neurons = sum(p.size for p in net.populations if p.on_chip)
        for chip_name in ("loihi1", "loihi2"):
            chip = load_chip(chip_name)
            t0 = time.perf_counter()
            m = map_network(net, chip)
            seconds = time.perf_counter() - t0
            if m.violations():
                raise SystemExit(f"{name} on {chip_name}: limits violated: {m.violations()[:3]}")
            tr = m.traffic
            cost = estimate_cost(m)
            row = {
                "network": name,
                "chip": chip_name,
                "neurons": neurons,
                "cores_used": m.cores_used,
                "lower_bound": m.lower_bound,
                "lower_bound_by_resource": {r.value: v for r, v in m.lower_bound_by_resource.items()},
                "ratio": m.cores_used / m.lower_bound,
                "chips_used": m.chips_used,
                "inter_core_spikes_per_step": tr["inter_core_spikes_per_step"],
                "spike_hops_per_step": tr["spike_hops_per_step"],
                "inter_chip_spikes_per_step": tr["inter_chip_spikes_per_step"],
                "energy_pj_per_step_davies2018": cost["energy_pj_per_step"],
                "time_ns_per_step_davies2018": cost["time_ns_per_step"],
                "mapping_seconds": seconds,
            }
            rows.append(row)
            print(
                f"{name:22} {chip_name:7} {neurons:>9} {m.cores_used:>6} {m.lower_bound:>6} {row['ratio']:>6.3f} "
                f"{m.chips_used:>5} {tr['inter_core_spikes_per_step']:>12.0f} {tr['spike_hops_per_step']:>12.0f} "
                f"{tr['inter_chip_spikes_per_step']:>12.0f} {seconds:>7.2f}"
            )
    result = {
        "benchmark": "loihi_mapping",
        "rates": {
            "input": RATE_IN,
            "other": RATE,
            "unit": "spikes per neuron per timestep",
            "digits": "calibrated on 256 training images (ann-to-loihi, T = 8)",
        },
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

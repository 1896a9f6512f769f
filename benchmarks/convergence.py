"""Convergence of converted SNNs to their clipped ANN on torchvision architectures.

Imports torchvision classifiers (random weights, BatchNorm statistics set from random data,
3x32x32; alexnet 3x64x64), runs a conversion pipeline and prints the cosine similarity of the
SNN's logits to the clipped ANN's (the converted graph in ANN mode) at each T, every T read from
one simulation of the largest; ``--he`` redraws the weights at He's scale (see torchvision_model);
``--ideal`` adds what a perfect T-step rate code of every activation would reach (ideal_cosines:
the network's own sensitivity); ``--layers`` adds, per neuron, the relative error of the mean
rate·scale against the clipped ANN activation of the same node.  Results: docs/analog_paths.md,
benchmarks/results/convergence.json.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/convergence.py --models all --timesteps 8,32,128,256 \
        --images 4 [--he --classes 10 --ideal] --json benchmarks/results/convergence.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from snnc.backends.torch import ops as TO
from snnc.backends.torch.simulator import TorchSimulator
from snnc.frontend.fx import import_module
from snnc.ir import Graph
from snnc.ir import ops as O
from snnc.pass_manager import CalibrationData, PassContext, PassManager
from snnc.passes.pipelines import ANN_TO_SNN, ANN_TO_SNN_FAST

PIPELINES = {"ann-to-snn": ANN_TO_SNN, "ann-to-snn-fast": ANN_TO_SNN_FAST}


# the torchvision classifiers measured (docs/analog_paths.md; which convert: docs/real_models.md and
# tests/test_torchvision_zoo.py): the smallest of each ReLU-family, and larger ones whose structure differs
# (grouped / wide bottlenecks, densenet161's growth, vgg without BatchNorm); alexnet needs 64x64 inputs
# (at 32x32 its last max pooling has no window), inception_v3 75x75 (its stem's valid convolutions)
SUPPORTED = ["resnet18", "resnet50", "mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_1", "densenet121",
             "vgg11_bn", "alexnet", "googlenet", "resnet34", "resnext50_32x4d", "wide_resnet50_2", "vgg11",
             "squeezenet1_0", "densenet161", "shufflenet_v2_x1_0", "mnasnet0_5", "regnet_x_400mf", "inception_v3"]
SIZE = {"alexnet": 64, "inception_v3": 75}
# googlenet and inception_v3 warn without init_weights (scipy's truncated normal) and build an auxiliary head
BUILD_KWARGS = {"googlenet": {"init_weights": True, "aux_logits": False},
                "inception_v3": {"init_weights": True, "aux_logits": False}}


def torchvision_model(name: str, seed: int = 0, size: int = 32, classes: int = 1000,
                      he: bool = False) -> tuple[torch.nn.Module, np.ndarray]:
    """A torchvision model with random weights and BatchNorm statistics set from random batches,
    in eval mode, and the batch used for them.

    ``he``: convs and linears redrawn at He's scale and the last linear's bias set so that the mean
    logit of each class over the batch is 0.  With torchvision's own init the logits of a deep random
    net barely depend on the input (their spread is 1e-7 of their norm on mobilenet_v2), so a cosine
    near 1 says little; with ``he`` the input-dependent part is what the cosine measures.
    """
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None, num_classes=classes, **BUILD_KWARGS.get(name, {}))
    x = torch.rand(32, 3, size, size)
    with torch.no_grad():
        if he:
            for m in model.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    m.weight.copy_(torch.randn(m.weight.shape) * (2.0 / m.weight[0].numel()) ** 0.5)
                    if m.bias is not None:
                        m.bias.copy_(0.1 * torch.randn(m.bias.shape))
        model.train()
        if he:  # the statistics of x exactly (a cumulative average over one batch)
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.reset_running_stats()
                    m.momentum = None
        for _ in range(1 if he else 3):
            model(x)
        model.eval()
        heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if he and heads:  # squeezenet has none: its classifier is a conv + ReLU + pooling
            heads[-1].bias.sub_(model(x).mean(dim=0))
    return model, x.numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of the cosine similarity of two (N, C) arrays."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float(np.mean(num / den))


@contextlib.contextmanager
def neurons_in_ann_mode(rate: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, the torch simulator's ANN mode computes every neuron as
    out_scale · clamp(rate(I / v_th), lo, B) instead of out_scale · clamp(I / v_th, lo, B): the
    clipped ANN with each activation perturbed as ``rate`` says (a diagnosis, nothing else)."""
    def perturbed(op: O.Neuron, xs: list[torch.Tensor], p: dict[str, torch.Tensor]) -> torch.Tensor:
        x = xs[0]
        vth = TO.neuron_param(op, p, "v_th", x.dim())
        scale = TO.neuron_param(op, p, "out_scale", x.dim())
        lo = -1 if op.negative is O.Negative.SIGNED else 0
        return scale * torch.clamp(rate(x / vth), lo, op.max_spikes)

    exact = TO.ANN[O.Neuron]
    TO.ANN[O.Neuron] = perturbed
    try:
        yield
    finally:
        TO.ANN[O.Neuron] = exact


def ideal_cosines(graph: Graph, x: np.ndarray, ann: np.ndarray, timesteps: int, seed: int = 0) -> tuple[float, float]:
    """How far from the clipped ANN an SNN that codes every activation perfectly in T steps lands:
    (cosine of the clipped ANN with every neuron's rate rounded to a multiple of 1/T, the same with
    a uniform error in ±1/(2T) added to every rate instead) against the clipped ANN.  Below 0.99,
    no rate code of T steps reaches 0.99: the network amplifies errors of that size (chaos)."""
    sim = TorchSimulator()
    with neurons_in_ann_mode(lambda r: torch.round(r * timesteps) / timesteps):
        rounded = sim.run_ann(graph, x)[graph.outputs[0]]
    gen = torch.Generator().manual_seed(seed)
    with neurons_in_ann_mode(lambda r: r + (torch.rand(r.shape, generator=gen) - 0.5) / timesteps):
        noisy = sim.run_ann(graph, x)[graph.outputs[0]]
    return cosine(rounded, ann), cosine(noisy, ann)


def spread(logits: np.ndarray) -> float:
    """How much the logits depend on the input: the norm of their deviation from their mean over the
    samples, relative to their norm (near 0: the cosine measures the input-independent part only)."""
    a = logits.astype(np.float64)
    return float(np.linalg.norm(a - a.mean(0)) / (np.linalg.norm(a) + 1e-12))


def convert(graph: Graph, calib: np.ndarray, timesteps: int, pipeline: str) -> tuple[Graph, Graph]:
    """(the clipped ANN = the graph right after lower-neurons, the SNN)."""
    ctx = PassContext(calibration=CalibrationData(calib, None, batch_size=64), simulator=TorchSimulator(),
                      timesteps=timesteps)
    passes = PassManager.parse(pipeline.replace(",count-ops", ""))
    names = [p.name for p in passes.passes]
    cut = names.index("lower-neurons") + 1
    clipped = PassManager(passes.passes[:cut]).run(graph, ctx)
    snn = PassManager(passes.passes[cut:]).run(clipped, ctx)
    return clipped, snn


def layer_errors(clipped: Graph, snn: Graph, x: np.ndarray, timesteps: int) -> list[tuple[str, float, float]]:
    """Per neuron of ``snn`` also present in ``clipped``: (name, rel. error of mean output, ANN mean)."""
    sim = TorchSimulator()
    names = [n.name for n in snn.nodes if isinstance(n.op, O.Neuron)]
    ann = sim.run_ann(clipped, x, record=names)
    res = sim.run_snn(snn, x, timesteps, record=names)
    clip_nodes = {n.name: n for n in clipped.nodes}
    out = []
    for name in names:
        a = ann[name]
        s = res.recorded[name]
        # the SNN stores spikes (scale folded downstream): compare with the clipped ANN in units of θ
        node = clip_nodes[name]
        theta = node.param(clipped, "out_scale")
        theta = np.asarray(theta if theta is not None else node.op.out_scale, dtype=np.float64)  # type: ignore[attr-defined]
        th = theta.reshape((1, -1) + (1,) * (a.ndim - 2)) if theta.size > 1 else float(theta.reshape(-1)[0])
        a_units = a / th
        err = float(np.linalg.norm(s - a_units) / (np.linalg.norm(a_units) + 1e-12))
        out.append((name, err, float(a_units.mean())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2", help="comma-separated, or 'all' (SUPPORTED)")
    ap.add_argument("--he", action="store_true", help="He-scaled weights and centred logits (see torchvision_model)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None, help="also write the curves here (merged into an existing file)")
    ap.add_argument("--timesteps", default="8,16,32,64,128,256")
    ap.add_argument("--pipeline", default="ann-to-snn")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--ideal", action="store_true",
                    help="also the cosine of an ideal T-step rate code (ideal_cosines): what the network's sensitivity allows")
    ap.add_argument("--layers", type=int, default=0, help="T at which to print per-neuron errors (0: none)")
    args = ap.parse_args()
    ts = [int(t) for t in args.timesteps.split(",")]
    for name in SUPPORTED if args.models == "all" else args.models.split(","):
        size = SIZE.get(name, 32)
        model, calib = torchvision_model(name, size=size, classes=args.classes, he=args.he)
        x = np.random.default_rng(1).uniform(0, 1, (args.images, 3, size, size)).astype(np.float32)
        graph = import_module(model, torch.as_tensor(x[:1]))
        with torch.no_grad():
            ref = model(torch.as_tensor(x)).numpy()
        t0 = time.time()
        clipped, snn = convert(graph, calib, max(ts), PIPELINES.get(args.pipeline, args.pipeline))
        sim = TorchSimulator()
        ann = sim.run_ann(clipped, x)[clipped.outputs[0]]
        print(f"{name}: converted in {time.time() - t0:.1f}s; clipped ANN vs model cosine {cosine(ann, ref):.4f}; "
              f"logit spread {spread(ann):.2e}", flush=True)
        t0, c0 = time.time(), time.process_time()
        runs = sim.run_snn_steps(snn, x, ts)  # one run of max(T) steps, read at each T (same floats)
        curve = [cosine(runs[t].logits, ann) for t in ts]
        wall, cpu = time.time() - t0, time.process_time() - c0
        print("  " + "  ".join(f"T={t}: {c:.4f}" for t, c in zip(ts, curve, strict=True))
              + f"  ({wall:.0f} s wall, {cpu:.0f} s CPU)", flush=True)
        ideal: dict[int, tuple[float, float]] = {}
        if args.ideal:
            ideal = {t: ideal_cosines(snn, x, ann, t) for t in ts}
            print("  ideal rate code (rounded / ±1/(2T) noise): "
                  + "  ".join(f"T={t}: {r:.4f} / {n:.4f}" for t, (r, n) in ideal.items()), flush=True)
        if args.json is not None:
            done = json.loads(args.json.read_text()) if args.json.exists() else {}
            key = f"{name}{' he' if args.he else ''}"
            done[key] = {
                "model": name, "he_init": args.he, "classes": args.classes, "images": args.images,
                "pipeline": args.pipeline, "clipped_vs_model": cosine(ann, ref), "cosine": dict(zip(ts, curve, strict=True)),
                "logit_spread": spread(ann), "simulation_cpu_s": round(cpu, 1)}
            if ideal:
                done[key]["ideal_rounded"] = {t: r for t, (r, _) in ideal.items()}
                done[key]["ideal_noise"] = {t: n for t, (_, n) in ideal.items()}
            args.json.write_text(json.dumps(done, indent=2) + "\n")
        if args.layers:
            for lname, err, mean in layer_errors(clipped, snn, x, args.layers):
                print(f"    {lname:40s} rel.err {err:.3f}  mean {mean:.3f}")


if __name__ == "__main__":
    main()

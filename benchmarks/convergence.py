"""Convergence of converted SNNs to their clipped ANN on torchvision architectures.

Imports resnet18 and mobilenet_v2 (random weights, BatchNorm statistics set from random data,
3x32x32), runs a conversion pipeline and prints the cosine similarity of the SNN's logits to
the clipped ANN's (the converted graph in ANN mode) at each T; ``--layers`` adds, per neuron,
the relative error of the mean rate·scale against the clipped ANN activation of the same node.

    .venv/bin/python benchmarks/convergence.py [--models resnet18,mobilenet_v2] [--timesteps 8,16,...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from snnc.backends.torch.simulator import TorchSimulator
from snnc.frontend.fx import import_module
from snnc.ir import Graph
from snnc.ir import ops as O
from snnc.pass_manager import CalibrationData, PassContext, PassManager
from snnc.passes.pipelines import ANN_TO_SNN, ANN_TO_SNN_FAST

PIPELINES = {"ann-to-snn": ANN_TO_SNN, "ann-to-snn-fast": ANN_TO_SNN_FAST}


# every torchvision classifier that converts (docs/real_models.md); alexnet needs 64x64 inputs
SUPPORTED = ["resnet18", "resnet50", "mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_1", "densenet121",
             "vgg11_bn", "alexnet", "googlenet"]
SIZE = {"alexnet": 64}


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
    kwargs = {"init_weights": True, "aux_logits": False} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(weights=None, num_classes=classes, **kwargs)
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
        print(f"{name}: converted in {time.time() - t0:.1f}s; clipped ANN vs model cosine {cosine(ann, ref):.4f}")
        row: list[str] = []
        curve: list[float] = []
        for t in ts:
            t0 = time.time()
            res = sim.run_snn(snn, x, t)
            curve.append(cosine(res.logits, ann))
            row.append(f"T={t}: {curve[-1]:.4f} ({time.time() - t0:.1f}s)")
        print("  " + "  ".join(row), flush=True)
        if args.json is not None:
            done = json.loads(args.json.read_text()) if args.json.exists() else {}
            done[f"{name}{' he' if args.he else ''}"] = {
                "model": name, "he_init": args.he, "classes": args.classes, "images": args.images,
                "pipeline": args.pipeline, "clipped_vs_model": cosine(ann, ref), "cosine": dict(zip(ts, curve, strict=True))}
            args.json.write_text(json.dumps(done, indent=2) + "\n")
        if args.layers:
            for lname, err, mean in layer_errors(clipped, snn, x, args.layers):
                print(f"    {lname:40s} rel.err {err:.3f}  mean {mean:.3f}")


if __name__ == "__main__":
    main()

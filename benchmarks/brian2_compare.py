"""snnc's TVM target side by side with a peer simulator (Brian2, C++ standalone) and the dense ANN (issue 14).

The same converted network runs four ways: snnc ``--target tvm`` (fp32, and int8 through
``tvm-quantize``), snnc's torch backend (the reference simulator), Brian2's C++ standalone mode
(generated C++, compiled with g++), and the source ANN's dense forward pass in torch.

The Brian2 network is built from snnc's IR, not from the ANN: every ``neuron`` (IF, soft reset,
``v_init``, per-channel ``v_th``) is a ``NeuronGroup``; the synaptic ops between two neurons
(linear, conv2d, avg pooling, flatten) become one ``Synapses`` with explicit connectivity (the
ops' Jacobian, without biases; the biases are a constant current per step); the direct-coded
input layer is a constant current per sample (a ``TimedArray``); gated max pooling
(``spike_maxpool``) is a summed variable over each window's pairs (how many peers have a larger
spike count, ties to the first) that gates the pool's synapses; the readout integrates
``W·s + b`` without threshold.  Brian2's default schedule delivers a spike in the ``synapses``
slot, after every group's threshold, so each layer would see its input one step late; here every
object runs in the ``groups`` slot in snnc's order (per layer: integrate, threshold, reset,
gate, deliver to the next layer), which removes that delay: spikes reach the next layer in the
step they are emitted, as in snnc.  Samples run one after another in one run (Brian2 has no
batch): state is reset every T steps, the readout is recorded before the reset.

The agreement check (spike counts per layer and neuron, logits, predictions, against the torch
backend on the same IR) runs before any timing.

Brian2 2.9.0, the newest on PyPI, does not import with numpy >= 2.4 (``ndarray.ptp``; fixed in
brian2 PR #1705, unreleased), and the project's ``.venv`` holds numpy 2.4: Brian2 therefore
lives in its own venv (``make .venv-brian2/.installed``: brian2 2.9.0, numpy < 2.4), and this
file is also its worker (``--worker``: imports numpy and brian2 only).

    python benchmarks/brian2_compare.py                      # digits MLP and CNN, synthetic MLP and CNN
    python benchmarks/brian2_compare.py --networks digits_mlp --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "brian2_compare.json"
BRIAN2_PYTHON = ROOT / ".venv-brian2" / "bin" / "python"
NETWORKS = ("digits_mlp", "digits_cnn", "synthetic_mlp", "synthetic_cnn")
SAMPLES = 32  # inputs per network: batch 32 for snnc and the ANN, 32 samples in a row for Brian2


# =======================================================================================
# the worker: runs under .venv-brian2 (numpy + brian2, no torch, no snnc)


def worker(spec_path: Path, out_dir: Path, threads: int) -> None:
    """Build the network of ``spec_path`` with Brian2's C++ standalone device in ``out_dir``,
    run it once and write the per-sample spike counts and readout sums to
    ``out_dir/result.npz`` and the build times to ``out_dir/build.json``."""
    import brian2 as b2

    spec = np.load(spec_path)
    meta = json.loads(str(spec["meta"]))
    T, N, layers = meta["timesteps"], meta["samples"], meta["layers"]
    b2.set_device("cpp_standalone", build_on_run=False)
    b2.prefs.core.default_float_dtype = np.float32  # snnc's simulators run in float32
    b2.prefs.devices.cpp_standalone.openmp_threads = threads if threads > 1 else 0
    b2.defaultclock.dt = 1 * b2.ms  # one snnc step; the unit has no meaning here
    step, sample = b2.defaultclock.dt, T * b2.defaultclock.dt
    order = iter(range(1000))  # snnc's order within a step, one slot ("groups") for everything
    objects: list = []

    def in_order(obj):  # place a code runner at the next position of the step
        obj.when, obj.order = "groups", next(order)
        return obj

    i_in = b2.TimedArray(spec["input"], dt=sample)  # row k: sample k's constant input current
    groups, monitors = [], []
    for k, name in enumerate(layers):
        gated = f"{name}_gate_pre" in spec
        model = "v : 1\nI_syn : 1\nvth : 1 (constant)\nb : 1 (constant)"
        reset = "v -= vth"
        if gated:  # the spike count that gated max pooling compares, and how many peers beat it
            model += "\ncnt : 1\nbeaten : 1\nrank : 1 (constant)"
            reset += "\ncnt += 1"
        g = b2.NeuronGroup(len(spec[f"{name}_vth"]), model, threshold="v >= vth", reset=reset, name=name)
        g.vth, g.b = spec[f"{name}_vth"], spec[f"{name}_b"]
        g.v = meta["v_init"][k] * spec[f"{name}_vth"]
        if gated:
            g.rank = spec[f"{name}_rank"]
        if k > 0:
            pre = groups[-1]
            deliver = "I_syn_post += w"
            if f"{layers[k - 1]}_gate_pre" in spec:  # only the window's leader passes its spike
                deliver = "I_syn_post += w * int(beaten_pre < 0.5)"
            s = b2.Synapses(pre, g, "w : 1", on_pre=deliver, name=f"syn_{name}")
            s.connect(i=spec[f"{name}_pre"], j=spec[f"{name}_post"])
            s.w = spec[f"{name}_w"]
            in_order(s.pre)
            objects.append(s)
        update = "v += i_in(t, i)" if k == 0 else "v += I_syn + b\nI_syn = 0"
        objects.append(in_order(g.run_regularly(update, name=f"{name}_integrate")))
        in_order(g.thresholder["spike"])
        in_order(g.resetter["spike"])
        monitors.append(in_order(b2.SpikeMonitor(g, name=f"{name}_spikes")))
        if gated:
            gate = b2.Synapses(g, g, "beaten_post = int(cnt_pre > cnt_post or (cnt_pre == cnt_post and "
                               "rank_pre < rank_post)) : 1 (summed)", name=f"{name}_gate")
            gate.connect(i=spec[f"{name}_gate_pre"], j=spec[f"{name}_gate_post"])
            in_order(gate.summed_updaters["beaten_post"])
            objects.append(gate)
        # a new sample: state back to v_init·v_th before anything else of the step
        restart = "v = " + repr(float(meta["v_init"][k])) + " * vth\nI_syn = 0" + ("\ncnt = 0" if gated else "")
        objects.append(g.run_regularly(restart, dt=sample, when="start", order=1, name=f"{name}_restart"))
        groups.append(g)
    out = b2.NeuronGroup(len(spec["readout_b"]), "acc : 1\nI_syn : 1\nb : 1 (constant)", name="readout")
    out.b = spec["readout_b"]
    s = b2.Synapses(groups[-1], out, "w : 1", on_pre="I_syn_post += w", name="syn_readout")
    s.connect(i=spec["readout_pre"], j=spec["readout_post"])
    s.w = spec["readout_w"]
    in_order(s.pre)
    objects.append(s)
    objects.append(in_order(out.run_regularly("acc += I_syn + b\nI_syn = 0", name="readout_integrate")))
    # the sums of the sample that just ended, read before the restart clears them
    sums = b2.StateMonitor(out, "acc", record=True, dt=sample, when="start", order=0, name="readout_sums")
    objects.append(out.run_regularly("acc = 0\nI_syn = 0", dt=sample, when="start", order=1, name="readout_restart"))
    net = b2.Network(*groups, out, *objects, *monitors, sums)
    net.run(N * sample, namespace={"i_in": i_in})
    (out_dir / "schedule.txt").write_text(str(net.scheduling_summary()))
    t0 = time.perf_counter()
    b2.device.build(directory=str(out_dir / "brian2"), compile=True, run=False, clean=True)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    b2.device.run()
    first_run_s = time.perf_counter() - t0
    counts = {}
    for name, m in zip(layers, monitors, strict=True):
        k = np.rint(np.asarray(m.t_) / float(step)).astype(np.int64) // T  # the sample of each spike
        c = np.zeros((N, len(spec[f"{name}_vth"])), np.int64)
        np.add.at(c, (k, np.asarray(m.i)), 1)
        counts[f"counts_{name}"] = c
    acc = np.asarray(sums.acc).T  # [N, C]: row k = the sums at the start of sample k = of sample k-1
    acc = np.concatenate([acc[1:], np.asarray(out.acc)[None]], axis=0)
    np.savez(out_dir / "result.npz", sums=acc, **counts)
    synapses = sum(len(o) for o in objects if isinstance(o, b2.Synapses))
    (out_dir / "build.json").write_text(json.dumps({
        "build_s": build_s, "first_run_s": first_run_s, "run_loop_s": b2.device._last_run_time,
        "synapses": synapses, "brian2": b2.__version__, "numpy": np.__version__,
    }))  # fmt: skip


# =======================================================================================
# the glue: snnc IR -> the Brian2 network description (runs under .venv)


def _jacobian(ops: list, shape: tuple[int, ...], chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The synapses (pre, post, w) of the linear map that ``ops`` (IR nodes, biases left out)
    apply to an input of ``shape``: the chain run on chunks of one-hot inputs.  Each weight is
    one parameter (or a parameter times a power of two for average pooling): exact."""
    import torch

    from snnc.backends.torch.ops import ANN

    n = int(np.prod(shape))
    pres, posts, ws = [], [], []
    with torch.no_grad():
        for start in range(0, n, chunk):
            rows = min(chunk, n - start)
            x = torch.zeros((rows, n))
            x[torch.arange(rows), torch.arange(start, start + rows)] = 1.0
            y = x.reshape((rows, *shape))
            for node, params in ops:
                y = ANN[type(node.op)](node.op, [y], {k: v for k, v in params.items() if k != "bias"})
            y = y.reshape(rows, -1)
            r, c = torch.nonzero(y, as_tuple=True)
            pres.append((r + start).numpy().astype(np.int32))
            posts.append(c.numpy().astype(np.int32))
            ws.append(y[r, c].numpy().astype(np.float32))
    return np.concatenate(pres), np.concatenate(posts), np.concatenate(ws)


def _chain_bias(ops: list, shape: tuple[int, ...]) -> np.ndarray:
    """The current the chain adds every step whatever its input: its output at zero input."""
    import torch

    from snnc.backends.torch.ops import ANN

    with torch.no_grad():
        y = torch.zeros((1, *shape))
        for node, params in ops:
            y = ANN[type(node.op)](node.op, [y], params)
    return y.reshape(-1).numpy().astype(np.float32)


def network_spec(graph, x: np.ndarray, timesteps: int) -> tuple[dict[str, np.ndarray], dict]:
    """The Brian2 network description of a converted snnc graph, for the inputs ``x``.

    Accepts a chain ``encode(direct) -> analog synaptic ops -> neuron -> [spike_maxpool] ->
    synaptic ops -> neuron ... -> synaptic ops -> readout`` with IF neurons, soft reset, a
    non-strict threshold and unit output scale (what ``ann-to-snn-unsigned`` produces); anything
    else raises SystemExit naming the node."""
    import torch

    from snnc.backends.torch.ops import ANN
    from snnc.ir import ops as O

    linear_ops = (O.Linear, O.Conv2d, O.AvgPool2d, O.SumPool2d, O.Flatten, O.Reshape, O.Identity, O.Dropout)

    def refuse(node, why: str):
        raise SystemExit(f"brian2_compare: {graph.name}: node %{node.name} ({node.op.name}): {why}")

    def params(node) -> dict:
        return {role: torch.from_numpy(np.asarray(graph.params[key])) for role, key in node.params.items()}

    prev = graph.inputs[0][0]
    segments: list[dict] = [{"ops": [], "source": prev}]  # the ops between two neurons
    layers: list = []
    for node in graph.nodes:
        if list(node.inputs) != [prev]:
            refuse(node, "not a chain (reads something other than the previous node)")
        op = node.op
        if isinstance(op, O.Encode):
            if op.scheme is not O.Scheme.DIRECT:
                refuse(node, "only direct coding (a constant input current)")
        elif isinstance(op, O.Neuron):
            if (op.model is not O.NeuronModel.IF or op.reset is not O.Reset.SOFT or op.max_spikes != 1
                    or op.strict or op.reset_delay or op.presubtract or op.emit is not O.Emit.SPIKES
                    or op.negative is not O.Negative.NONE or op.out_scale != 1.0 or "out_scale" in node.params):  # fmt: skip
                refuse(node, "only IF neurons, soft reset, v >= v_th, one spike per step, unit output scale")
            layers.append(node)
            segments[-1]["target"] = node
            segments.append({"ops": [], "source": node.name})
        elif isinstance(op, O.SpikeMaxPool2d):
            if segments[-1]["ops"] or not layers or op.kernel != op.stride or op.padding != (0, 0) or op.ceil_mode:
                refuse(node, "gated max pooling right after a neuron, kernel = stride, no padding")
            segments[-1]["gate"] = node
        elif isinstance(op, linear_ops):
            segments[-1]["ops"].append((node, params(node)))
        elif isinstance(op, O.Readout):
            if op.mode is not O.ReadoutMode.MEAN_CURRENT or op.exit_rule is not O.ExitRule.NONE:
                refuse(node, "only a mean-current readout without early exit")
            segments[-1]["target"] = node
        else:
            refuse(node, "no Brian2 translation for this op")
        prev = node.name
    if not layers or "target" not in segments[-1]:
        raise SystemExit(f"brian2_compare: {graph.name}: needs at least one neuron and a readout")

    def vth_of(node) -> np.ndarray:
        shape = graph.value_type(node.name).shape
        v = np.full(shape, node.op.v_th, np.float32)
        if "v_th" in node.params:  # per channel: broadcast over the spatial axes
            p = np.asarray(graph.params[node.params["v_th"]], np.float32).reshape(-1)
            v = v * (p.reshape((-1,) + (1,) * (len(shape) - 1)) if p.size > 1 else p)
        return v.reshape(-1).astype(np.float32)

    arrays: dict[str, np.ndarray] = {}
    # the input layer: encode + analog ops, loop-invariant, computed once per sample (as snnc does)
    with torch.no_grad():
        y = torch.from_numpy(np.asarray(x, np.float32))
        for node, p in segments[0]["ops"]:
            y = ANN[type(node.op)](node.op, [y], p)
    arrays["input"] = y.reshape(len(x), -1).numpy().astype(np.float32)
    names = [n.name for n in layers]
    for k, seg in enumerate(segments[1:]):
        src = layers[k]
        src_shape = tuple(graph.value_type(src.name).shape)
        target = seg["target"].name if isinstance(seg["target"].op, O.Neuron) else "readout"
        shape = src_shape
        if "gate" in seg:
            gate = seg["gate"]
            c, h, w = src_shape
            kh, kw = gate.op.kernel
            oh, ow = h // kh, w // kw
            cc, yy, xx = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
            inside = ((yy < oh * kh) & (xx < ow * kw)).reshape(-1)
            window = ((cc * oh + yy // kh) * ow + xx // kw).reshape(-1)
            arrays[f"{src.name}_rank"] = ((yy % kh) * kw + xx % kw).reshape(-1).astype(np.float32)
            members = [np.flatnonzero(inside & (window == p)) for p in range(c * oh * ow)]
            pairs = [(i, j) for m in members for i in m for j in m if i != j]
            arrays[f"{src.name}_gate_pre"] = np.array([p[0] for p in pairs], np.int32)
            arrays[f"{src.name}_gate_post"] = np.array([p[1] for p in pairs], np.int32)
            shape = (c, oh, ow)
        pre, post, w = _jacobian(seg["ops"], shape)
        if "gate" in seg:  # every member of a window carries the pooled output's synapses
            order = np.argsort(pre, kind="stable")
            pre, post, w = pre[order], post[order], w[order]
            bounds = np.searchsorted(pre, np.arange(shape[0] * shape[1] * shape[2] + 1))
            idx = [np.arange(bounds[p], bounds[p + 1]) for p in window[inside]]
            neurons = np.flatnonzero(inside)
            pre = np.concatenate([np.full(len(i), n, np.int32) for n, i in zip(neurons, idx, strict=True)])
            post, w = np.concatenate([post[i] for i in idx]), np.concatenate([w[i] for i in idx])
        arrays[f"{target}_pre"], arrays[f"{target}_post"], arrays[f"{target}_w"] = pre, post, w
        arrays[f"{target}_b"] = _chain_bias(seg["ops"], shape)
    for node in layers:
        arrays[f"{node.name}_vth"] = vth_of(node)
    arrays.setdefault(f"{names[0]}_b", np.zeros_like(arrays[f"{names[0]}_vth"]))  # in the input current
    meta = {"timesteps": timesteps, "samples": len(x), "layers": names,
            "v_init": [float(n.op.v_init) for n in layers]}  # fmt: skip
    return arrays, meta



# =======================================================================================
# the cases, the agreement check and the timing (runs under .venv)


def ann_module(name: str):
    """The source ANN of a network, in eval mode: the digits models from their state dicts, the
    synthetic ones rebuilt by event_kernels.synthetic_models (seeded)."""
    import torch

    if name.startswith("digits_"):
        sys.path.insert(0, str(ROOT / "examples" / "digits"))
        import models as digits_models

        arch = name.removeprefix("digits_")
        model = digits_models.ARCHITECTURES[arch]()
        model.load_state_dict(torch.load(ROOT / "examples" / "digits" / f"{arch}.pt", weights_only=True))
        return model.eval()
    from event_kernels import synthetic_models

    return synthetic_models()[name][0].eval()


def build_brian2(case, work: Path, python: Path, threads: int) -> tuple[dict, dict[str, np.ndarray], Path]:
    """Translate the case's IR, build and run it once in Brian2; return the build report, the
    results (per-sample spike counts of each layer, readout sums) and the project directory."""
    t0 = time.perf_counter()
    arrays, meta = network_spec(case.graph, case.x, case.timesteps)
    spec_s = time.perf_counter() - t0
    out = work / f"brian2_{case.name}"
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "spec.npz", meta=json.dumps(meta), **arrays)
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", str(out / "spec.npz"), str(out),
           "--threads", str(threads)]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=os.environ | {"OMP_WAIT_POLICY": "PASSIVE"})
    worker_s = time.perf_counter() - t0
    report = json.loads((out / "build.json").read_text()) | {"spec_s": spec_s, "worker_s": worker_s}
    res = np.load(out / "result.npz")
    return report, {k: res[k] for k in res.files}, out / "brian2"


def agreement(case, brian: dict[str, np.ndarray], tvm_out: dict) -> dict:
    """Brian2 against the torch backend on the same IR and inputs: per layer, the fraction of
    (sample, neuron) spike counts that are equal, the largest difference and the totals; the
    readout's logits and the predictions.  TVM's per-sample totals are listed beside them."""
    from snnc.backends.torch.simulator import TorchSimulator

    layers = [k.removeprefix("counts_") for k in brian if k.startswith("counts_")]
    ref = TorchSimulator("cpu").run_snn(case.graph, case.x, case.timesteps, record=layers)
    out: dict = {"layers": {}}
    for name in layers:
        counts = np.rint(ref.recorded[name] * case.timesteps).reshape(len(case.x), -1).astype(np.int64)
        mine = brian[f"counts_{name}"]
        tvm_name = case.graph.node(name).inputs[0]  # TVM names a spiking layer by its synaptic op
        out["layers"][name] = {
            "neurons": int(mine.shape[1]),
            "counts_equal": float(np.mean(mine == counts)),
            "max_count_diff": int(np.abs(mine - counts).max()),
            "spikes_per_sample": {"brian2": float(mine.sum(1).mean()), "torch": float(counts.sum(1).mean()),
                                  "tvm": float(np.mean(tvm_out["spikes_per_layer"][tvm_name]))
                                  if tvm_name in tvm_out["spikes_per_layer"] else None},
        }  # fmt: skip
    logits = brian["sums"] / case.timesteps
    out["max_logit_diff"] = float(np.abs(logits - ref.logits).max())
    out["predictions_agree"] = float(np.mean(logits.argmax(1) == ref.predictions))
    out["tvm_predictions_agree"] = float(np.mean(tvm_out["predictions"] == ref.predictions))
    out["samples"] = len(case.x)
    return out


COUNTS_EQUAL_MIN = 0.999  # per layer, of the (sample, neuron) spike counts
PREDICTIONS_AGREE_MIN = 0.95  # float32 sums in another order flip a rare threshold crossing


def check_agreement(name: str, agree: dict) -> None:
    """Refuse to time networks that do not compute the same thing (a comparison of different
    networks is worthless): every layer's counts equal on >= 99.9 % of (sample, neuron) pairs,
    predictions equal on >= 95 % of the inputs (the TVM target itself agrees with the torch
    backend on 31 of 32 synthetic CNN inputs: its sums run in another order)."""
    bad = [f"{layer}: {100 * a['counts_equal']:.3f} % of counts equal" for layer, a in agree["layers"].items()
           if a["counts_equal"] < COUNTS_EQUAL_MIN]  # fmt: skip
    if agree["predictions_agree"] < PREDICTIONS_AGREE_MIN:
        bad.append(f"predictions agree on {100 * agree['predictions_agree']:.1f} %")
    if bad:
        raise SystemExit(f"brian2_compare: {name}: Brian2 and the torch backend disagree ({'; '.join(bad)}); not timed")


def run_binary(project: Path) -> tuple[float, float, float]:
    """One execution of Brian2's compiled program: (its own timer around the network's run loop,
    which is std::clock, the CPU time of the process; the process's wall time; its CPU time), in
    seconds.  The process also loads the
    synapse arrays from disk and builds the synapses; the run loop is the simulation."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([str(project / "main")], cwd=project, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    loop = float((project / "results" / "last_run_info.txt").read_text().split()[0])
    return loop, wall, cpu


def stats(samples: list[float], scale: float = 1.0) -> dict:
    a = np.asarray(samples) * scale
    return {"median_s": float(np.median(a)), "p10_s": float(np.percentile(a, 10)),
            "p90_s": float(np.percentile(a, 90)), "n": len(a)}  # fmt: skip


def time_case(case, ann, project: Path, rounds: int, budget_s: float) -> dict:
    """Interleaved rounds (random order): per batch size, the TVM runtime (fp32, int8), the torch
    backend, the dense ANN; and one execution of the Brian2 program per round.  Returns per call
    wall times (and process CPU per call) and Brian2's run-loop, process wall and CPU times."""
    import torch

    from snnc.backends.torch.simulator import TorchSimulator
    from snnc.backends.tvm.runtime import EventRuntime

    sim = TorchSimulator("cpu")
    rt = EventRuntime(case.artifact)
    rt8 = EventRuntime(case.int8.artifact) if case.int8 is not None else None
    T = case.timesteps
    methods = {}
    for b in (1, len(case.x)):
        x = case.x[:b]
        xt = torch.from_numpy(x)
        methods[("tvm", b)] = lambda x=x, b=b: rt.run(x, T, batch_size=b)
        if rt8 is not None:
            methods[("tvm_int8", b)] = lambda x=x, b=b: rt8.run(x, T, batch_size=b)
        methods[("torch", b)] = lambda x=x: sim.run_snn(case.graph, x, T)
        methods[("ann", b)] = lambda xt=xt: _no_grad(ann, xt)
    calls = {}
    if True:  # (the torch backend differentiates its fan-out once: no inference_mode around it)
        for key, fn in methods.items():  # warm-up, and size each block to the budget
            fn()
            t0 = time.perf_counter()
            fn()
            calls[key] = int(min(500, max(2, budget_s / max(time.perf_counter() - t0, 1e-7))))
        run_binary(project)
        wall: dict = {k: [] for k in methods}
        cpu: dict = {k: [] for k in methods}
        brian: dict[str, list[float]] = {"loop": [], "wall": [], "cpu": []}
        order = [*methods, "brian2"]
        for _ in range(rounds):
            random.shuffle(order)
            for key in order:
                if key == "brian2":
                    loop, w, c = run_binary(project)
                    brian["loop"].append(loop), brian["wall"].append(w), brian["cpu"].append(c)
                    continue
                fn, c0 = methods[key], time.process_time()
                for _ in range(calls[key]):
                    t0 = time.perf_counter()
                    fn()
                    wall[key].append(time.perf_counter() - t0)
                cpu[key].append((time.process_time() - c0) / calls[key])
    rows = []
    steps = len(case.x) * T  # Brian2 ran every sample, one after another
    snn = [m for m in ("tvm", "tvm_int8", "torch") if (m, 1) in wall]
    for b in (1, len(case.x)):
        # per sample-step: wall per call, CPU per call (process time of a block over its calls)
        step = {m: {"wall": stats(wall[(m, b)], 1 / (b * T)), "cpu": stats(cpu[(m, b)], 1 / (b * T))} for m in snn}
        step["brian2"] = {"cpu": stats(brian["loop"], 1 / steps)}  # its run-loop timer is std::clock: CPU
        sample = {m: {k: _scaled(v, T) for k, v in d.items()} for m, d in step.items()}
        sample["ann"] = {"wall": stats(wall[("ann", b)], 1 / b), "cpu": stats(cpu[("ann", b)], 1 / b)}

        def ratio(num: dict, den: dict, clock: str = "cpu") -> float:
            return num[clock]["median_s"] / den[clock]["median_s"]

        rows.append({
            "batch": b, "per_sample_step": step, "per_sample": sample,
            "brian2_over_tvm_cpu": ratio(step["brian2"], step["tvm"]),
            "brian2_over_tvm_int8_cpu": ratio(step["brian2"], step["tvm_int8"]) if "tvm_int8" in step else None,
            "tvm_over_ann_cpu": ratio(sample["tvm"], sample["ann"]),
            "tvm_over_ann_wall": ratio(sample["tvm"], sample["ann"], "wall"),
            "tvm_int8_over_ann_cpu": ratio(sample["tvm_int8"], sample["ann"]) if "tvm_int8" in sample else None,
            "torch_over_tvm_cpu": ratio(step["torch"], step["tvm"]),
            "torch_over_tvm_wall": ratio(step["torch"], step["tvm"], "wall"),
        })  # fmt: skip
    process = {"run_loop_cpu": stats(brian["loop"]), "process_wall": stats(brian["wall"]),
               "process_cpu": stats(brian["cpu"]), "samples": len(case.x), "steps": steps}  # fmt: skip
    return {"rows": rows, "calls_per_block": {f"{m}@{b}": c for (m, b), c in calls.items()},
            "brian2_executions": process}  # fmt: skip


def _scaled(st: dict, factor: float) -> dict:
    return {k: v * factor if k.endswith("_s") else v for k, v in st.items()}


def _no_grad(module, x):
    import torch

    with torch.no_grad():
        return module(x)


def fmt_t(s: float) -> str:
    return f"{s * 1e6:.1f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def print_tables(results: list[dict]) -> None:
    """Per network and batch: CPU time per sample-step (median [p10-p90]) of each SNN method, the
    dense ANN's per sample, and the two ratios of issue 14; wall medians in brackets after."""
    print("\n| network | T | B | TVM fp32 | TVM int8 | torch backend | Brian2 C++ | Brian2 / TVM | "
          "dense ANN / sample | TVM / sample | TVM / ANN |")  # fmt: skip
    print("|" + "---|" * 11)
    for r in results:
        for row in r["timing"]["rows"]:
            st, sa = row["per_sample_step"], row["per_sample"]

            def cell(d: dict) -> str:
                c = d["cpu"]
                wall = f" (wall {fmt_t(d['wall']['median_s'])})" if "wall" in d else ""
                return f"{fmt_t(c['median_s'])} [{fmt_t(c['p10_s'])}-{fmt_t(c['p90_s'])}]{wall}"

            i8 = cell(st["tvm_int8"]) if "tvm_int8" in st else "-"
            print(f"| {r['network']} | {r['timesteps']} | {row['batch']} | {cell(st['tvm'])} | {i8} | "
                  f"{cell(st['torch'])} | {cell(st['brian2'])} | {row['brian2_over_tvm_cpu']:.1f}x | "
                  f"{cell(sa['ann'])} | {fmt_t(sa['tvm']['cpu']['median_s'])} | {row['tvm_over_ann_cpu']:.1f}x |")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=2, type=Path, metavar=("SPEC", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--networks", default=",".join(NETWORKS),
                    help=f"comma-separated, from {','.join(NETWORKS)}")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="threads of TVM, torch and Brian2 (OpenMP) (default 1)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--budget", type=float, default=0.2, help="seconds per timed block of an in-process method")
    ap.add_argument("--brian2-python", type=Path, default=BRIAN2_PYTHON, help="a Python with brian2")
    ap.add_argument("--keep", type=Path, help="keep the artifacts and Brian2 projects in this directory")
    ap.add_argument("--json", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], args.threads)
        return
    names = tuple(n for n in args.networks.split(",") if n)
    if unknown := sorted(set(names) - set(NETWORKS)):
        raise SystemExit(f"unknown networks {unknown}; known: {', '.join(NETWORKS)}")
    if not args.brian2_python.exists():
        raise SystemExit(f"no {args.brian2_python}: run `make .venv-brian2/.installed` (brian2 in its own venv)")
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before event_kernels imports TVM
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import tempfile

    import torch
    import tvm
    from event_kernels import network_cases

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    random.seed(0)
    t_start, load_start = time.perf_counter(), os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="snnc-brian2-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            (case,) = network_cases(work, batch=SAMPLES, synthetic_timesteps=16, names=(name,))
            report, brian, project = build_brian2(case, work, args.brian2_python, args.threads)
            from snnc.backends.tvm.runtime import EventRuntime

            tvm_out = EventRuntime(case.artifact).run(case.x, case.timesteps, batch_size=len(case.x))
            agree = agreement(case, brian, tvm_out)
            print(f"{name}: Brian2 build {report['build_s']:.0f} s ({report['synapses']} synapses); agreement "
                  f"{json.dumps(agree)}", flush=True)  # fmt: skip
            check_agreement(name, agree)
            ann = ann_module(name)
            with torch.inference_mode():
                ann_pred = ann(torch.from_numpy(case.x)).argmax(1).numpy()
            agree["ann_predictions_agree"] = float(np.mean(ann_pred == tvm_out["predictions"]))
            timing = time_case(case, ann, project, args.rounds, args.budget)
            results.append({
                "network": name, "timesteps": case.timesteps, "samples": len(case.x), "agreement": agree,
                "brian2_build": report, "snnc_compile_s": case.compile_s, "tvm_build_s": case.build_s,
                "tvm_kernels": case.kernels, "subnormals_zeroed": case.subnormals, "timing": timing,
            })  # fmt: skip
            print_tables(results[-1:])
    result = {
        "threads": args.threads,
        "versions": {"torch": torch.__version__, "tvm": tvm.__version__, "numpy": np.__version__},
        "machine": {"cpus": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "networks": results,
        "wall_s": time.perf_counter() - t_start,
    }
    if args.json.exists():  # keep the networks this run did not measure
        kept = [r for r in json.loads(args.json.read_text()).get("networks", []) if r["network"] not in names]
        result["networks"] = kept + results
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print_tables(result["networks"])
    print(f"\nwrote {args.json} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()

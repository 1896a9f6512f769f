"""d2e-finetune on one process against two (torchrun, gloo, DistributedDataParallel) on the digits.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/d2e_ddp.py [--model snntorch_mlp] [-T 4] [--repeats 3]

Compiles the direct-coded example ``examples/direct_snn/<model>_t<T>.pt`` with the default
``direct-to-event`` pipeline (30 epochs of d2e-finetune) on ``examples/digits/train.npz`` three ways:
one process with one thread, one process with two threads, and ``torchrun --nproc-per-node 2`` (one
thread per process, as torchrun sets).  For each: the wall time of the whole command and of the
d2e-finetune pass (``--time-passes``; the median of ``--repeats`` runs, interleaved), the last
epoch's training loss, training accuracy and spike cost (report.json), the test accuracy and spikes
(``snnc eval`` on examples/digits/test.npz, one process), and how far its trained weights are from
the one-process, one-thread ones; the CPU time of all the command's processes and the 1-minute
load average of the machine when each run started.  JSON in benchmarks/results/d2e_ddp.json; the table goes into
docs/cluster.md.  No timed asserts: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT, write_json

VENV_BIN = Path(sys.executable).parent
EXAMPLES = ROOT / "examples"

CONFIGS = {  # name -> (command prefix, threads per process)
    "1 process, 1 thread": ([str(VENV_BIN / "snnc")], "1"),
    "1 process, 2 threads": ([str(VENV_BIN / "snnc")], "2"),
    "2 processes (torchrun, gloo), 1 thread each": (
        [str(VENV_BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python", str(VENV_BIN / "snnc")],
        "1",
    ),
}


def _finetune_seconds(stderr: str) -> float:
    """The d2e-finetune line of --time-passes (rank 0 alone prints it)."""
    times = [float(line.split()[0]) for line in stderr.splitlines() if line.strip().endswith(" d2e-finetune")]
    if not times:
        raise SystemExit(f"no d2e-finetune timing in:\n{stderr[-2000:]}")
    return max(times)


def compile_once(prefix: list[str], threads: str, args: list[str]) -> tuple[float, float, float]:
    """(wall s, d2e-finetune wall s, CPU s of every process of the command)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": threads}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([*prefix, "compile", *args, "--time-passes", "-q"], capture_output=True, text=True, env=env,
                          timeout=3600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(prefix)} compile failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, _finetune_seconds(proc.stderr), cpu


def evaluate(out: Path, timesteps: int) -> dict:
    path = out.parent / f"{out.name}.eval.json"
    proc = subprocess.run([str(VENV_BIN / "snnc"), "eval", str(out), "--data", str(EXAMPLES / "digits" / "test.npz"),
                           "-T", str(timesteps), "--json", str(path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"eval failed:\n{proc.stderr[-3000:]}")
    return json.loads(path.read_text())["results"][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="snntorch_mlp")
    ap.add_argument("-T", "--timesteps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from safetensors.numpy import load_file

    src = EXAMPLES / "direct_snn"
    rows: dict[str, dict] = {name: {"wall_s": [], "finetune_s": [], "cpu_s": [], "load_average": []}
                             for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {name: Path(tmp) / f"out{i}" for i, name in enumerate(CONFIGS)}
        for _ in range(a.repeats):  # interleaved: a change in the machine's load hits every configuration
            for name, (prefix, threads) in CONFIGS.items():
                args = [str(src / f"{a.model}_t{a.timesteps}.pt"), "--arch", f"{src / 'models.py'}:{a.model}",
                        "--input-shape", "1,8,8", "-T", str(a.timesteps), "--calib",
                        str(EXAMPLES / "digits" / "train.npz"), "-o", str(outs[name])]
                load = os.getloadavg()[0]
                wall, finetune, cpu = compile_once(prefix, threads, args)
                for key, value in (("wall_s", wall), ("finetune_s", finetune), ("cpu_s", cpu), ("load_average", load)):
                    rows[name][key].append(value)
        base = load_file(str(outs["1 process, 1 thread"] / "params.safetensors"))
        source = load_file(str(outs["1 process, 1 thread"] / "source.safetensors"))
        for name, out in outs.items():
            report = json.loads((out / "report.json").read_text())
            last = report["passes"]["d2e-finetune"]["history"][-1]
            params = load_file(str(out / "params.safetensors"))
            ev = evaluate(out, a.timesteps)
            r = rows[name]
            r.update({
                "wall_median_s": statistics.median(r["wall_s"]),
                "finetune_median_s": statistics.median(r["finetune_s"]),
                "cpu_median_s": statistics.median(r["cpu_s"]),
                "final_loss": last["loss"], "final_train_accuracy": last["train_accuracy"],
                "final_spike_cost": last["spike_cost"],
                "test_accuracy": ev["accuracy"], "test_spikes_per_sample": ev["spikes_per_sample"],
                "max_abs_weight_diff_vs_1p1t": max(float(np.abs(params[k] - base[k]).max()) for k in base),
            })
        trained = [k for k in base if k in source and base[k].shape == source[k].shape]
        moved = max((float(np.abs(base[k] - source[k]).max()) for k in trained), default=float("nan"))
    result = {"model": a.model, "timesteps": a.timesteps, "repeats": a.repeats,
              "load_average_at_end": os.getloadavg(), "max_abs_weight_change_by_finetune_1p1t": moved,
              "configs": rows}
    write_json("d2e_ddp.json", result)
    print(table(result))


def table(r: dict) -> str:
    lines = ["| run | d2e-finetune (s) | whole compile (s) | CPU, all processes (s) | final loss | final train acc | final spike cost | "
             "test acc | spikes / sample | max abs weight diff vs 1 process, 1 thread |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in r["configs"].items():
        lines.append(f"| {name} | {c['finetune_median_s']:.1f} | {c['wall_median_s']:.1f} | {c['cpu_median_s']:.1f} | {c['final_loss']:.4f} | "
                     f"{c['final_train_accuracy']:.4f} | {c['final_spike_cost']:.4f} | {c['test_accuracy']:.4f} | "
                     f"{c['test_spikes_per_sample']:.1f} | {c['max_abs_weight_diff_vs_1p1t']:.2e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

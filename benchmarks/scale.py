"""Scale (issue 13): memory and time of compiling torchvision resnet18 at 3x64x64.

Generated data only (uniform random images, random labels; no downloads).  Measures, each compile
in a fresh process:

* peak RSS of ``snnc compile`` (ann-to-snn) with 1,000 and with 8,000 calibration images (goal: the
  8,000 run within 1.2x of the 1,000 run);
* compile time excluding calibration (the whole wall time of ``--time-passes`` less the two passes
  that run the ANN over the calibration set, calibrate and signed-neurons, and less the validating
  read of the data) against one torch forward pass in this process (goal: below one over 1,000
  images), the forward measured before, between and after the compiles (median and range: the
  machine's load drifts); every compile simulates the SNN once, on ``--report-samples`` (count-ops'
  counts and the report's accuracy); starting Python and importing torch and snnc, outside
  ``--time-passes``, is reported apart;
* calibration throughput: the calibrate pass on 1,000 images against the plain forward;
* ``torchrun --nproc-per-node 2`` compile and ``snnc eval`` against one process, alternated: byte-identical
  artifact, identical eval JSON, and the wall-time speedup of the whole commands on this machine, and of
  the compile's calibrate and report-simulation phases (rank 0's ``--time-passes``).  Compare them on a
  quiet machine only: torchrun starts each worker in a session of its own (``start_new_session``), so
  with the kernel's autogroup scheduling the workers and a one-process run get different shares of a
  loaded machine (and raising this script's priority raises the one-process run's only).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/scale.py [--images 1000,8000] [--report-samples 64]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/scale.py --distributed-only   # the torchrun rows alone

Writes benchmarks/results/scale.json and prints a Markdown table (docs/scale.md holds the last one).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import hygiene, write_json

SIZE = 64
VENV_BIN = Path(sys.executable).parent

# a compile in a fresh interpreter that reports its own peak RSS (the page cache of the data file
# is not part of it: snnc maps a batch at a time)
RSS_WRAPPER = """
import json, resource, sys, time
from snnc.cli import main
t0 = time.perf_counter()
code = main(sys.argv[2:], standalone_mode=False)
wall = time.perf_counter() - t0
json.dump({"code": code, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "wall_s": wall},
          open(sys.argv[1], "w"))
"""


def make_model(work: Path) -> tuple[torch.nn.Module, Path]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    x = torch.rand(32, 3, SIZE, SIZE)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)  # BatchNorm statistics from data
    model.eval()
    path = work / "resnet18.pt2"
    torch.export.save(torch.export.export(model, (x[:1],)), path)
    return model, path


def make_data(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n, 3, SIZE, SIZE)).astype(np.float32)
    np.savez(path, x=x, y=rng.integers(0, 10, n))
    return path


FORWARD_CPU_S: list[float] = []  # the CPU time of every forward_seconds call, in order


def forward_seconds(model: torch.nn.Module, data: Path, n: int = 1000, batch: int = 128) -> float:
    with np.load(data) as f:
        x = torch.from_numpy(f["x"][:n])
    with torch.no_grad():
        model(x[:batch])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, n, batch):
            model(x[i : i + batch])
    FORWARD_CPU_S.append(time.process_time() - c0)
    return time.perf_counter() - t0


def compile_run(work: Path, tag: str, args: list[str]) -> dict:
    """One ``snnc compile ... --time-passes`` in a fresh process: peak RSS, wall time (inside the
    process, and of the whole process with its start), step times."""
    script = work / "rss.py"
    script.write_text(RSS_WRAPPER)
    stats = work / f"{tag}.rss.json"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), str(stats), "compile", *args, "--time-passes", "-q"],
                          capture_output=True, text=True, timeout=3600)
    process_s = time.perf_counter() - t0
    if proc.returncode != 0 or not stats.exists():
        raise SystemExit(f"compile {tag} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(stats.read_text())
    result["process_s"] = process_s
    result["steps"] = _steps(proc.stderr)
    return result


def _steps(stderr: str) -> dict[str, float]:
    steps: dict[str, float] = {}
    lines = stderr.splitlines()
    start = lines.index("===== pass execution timing =====") + 2
    for line in lines[start:]:
        parts = line.split()
        if len(parts) < 3:
            break
        steps[parts[-1].split("{")[0]] = steps.get(parts[-1].split("{")[0], 0.0) + float(parts[0])
    return steps


def excluding_calibration(steps: dict[str, float]) -> float:
    """The whole compile less what is proportional to the calibration set: the passes that run the
    ANN over it (calibrate, signed-neurons) and the validating read of the data."""
    return steps["total"] - steps.get("calibrate", 0.0) - steps.get("signed-neurons", 0.0) - steps.get("read-data", 0.0)


def torchrun(args: list[str], steps: dict | None = None) -> float:
    """Wall time of ``torchrun --nproc-per-node 2 snnc ARGS``; ``steps``: filled with rank 0's
    ``--time-passes`` phases when ARGS ask for them."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(VENV_BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python",
                           str(VENV_BIN / "snnc"), *args], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"torchrun {args[0]} failed:\n{proc.stderr[-3000:]}")
    if steps is not None:
        steps.update(_steps(proc.stderr))
    return time.perf_counter() - t0


def one_process(args: list[str], steps: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([str(VENV_BIN / "snnc"), *args], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"snnc {args[0]} failed:\n{proc.stderr[-3000:]}")
    if steps is not None:
        steps.update(_steps(proc.stderr))
    return time.perf_counter() - t0


def same_dirs(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def simulation_before_after(out: Path, data: Path, samples: int, repeats: int) -> dict:
    """The compile's one SNN simulation, run here on the same sample (the report's seeded rows of the
    calibration data), time-major (the loop before layer-major execution) and layer-major, interleaved
    ``repeats`` times: CPU and wall time (median, range) and how far the results differ."""
    from snnc.backends.torch.simulator import GraphModule
    from snnc.driver import CompileOptions
    from snnc.passes._samples import sample_rows
    from snnc.runner import open_artifact

    graph = open_artifact(out).graph
    with np.load(data) as f:
        rows = sample_rows(len(f["y"]), samples, CompileOptions(model=out, out=out).seed)  # the default seed
        x = torch.from_numpy(f["x"][rows])
    m = GraphModule(graph)
    timesteps = graph.attrs.timesteps or 8
    times: dict[str, dict[str, list[float]]] = {k: {"cpu_s": [], "wall_s": []} for k in ("time_major", "layer_major")}
    runs = {}
    with torch.no_grad():
        for _ in range(repeats):
            for key, layer_major in (("time_major", False), ("layer_major", True)):
                t0, c0 = time.perf_counter(), time.process_time()
                runs[key] = m.run_snn(x, timesteps, layer_major=layer_major)
                times[key]["wall_s"].append(time.perf_counter() - t0)
                times[key]["cpu_s"].append(time.process_time() - c0)
    old, new = runs["time_major"], runs["layer_major"]
    rel = [abs(float(new["spikes"][k]) - float(v)) / max(float(v), 1.0) for k, v in old["spikes"].items()]
    result: dict = {"samples": samples, "timesteps": timesteps, "repeats": repeats,
                    "execution": [old["execution"], new["execution"]],
                    "predictions_agree": float((old["logits"].argmax(1) == new["logits"].argmax(1)).float().mean()),
                    "spikes_max_rel_diff": max(rel),
                    "total_spikes": [sum(float(v) for v in r["spikes"].values()) for r in (old, new)]}
    for key, t in times.items():
        result[key] = {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v} for k, v in t.items()}
    result["speedup_cpu"] = result["time_major"]["cpu_s"]["median"] / result["layer_major"]["cpu_s"]["median"]
    result["speedup_wall"] = result["time_major"]["wall_s"]["median"] / result["layer_major"]["wall_s"]["median"]
    return result


def one_against_two(work: Path, pt2: Path, calib: Path, test: Path, report_samples: int, eval_images: int,
                    repeats: int) -> dict:
    """``snnc compile`` and ``snnc eval`` in one process and under ``torchrun --nproc-per-node 2``,
    alternated ``repeats`` times (the load drifts): wall time of the whole command (interpreter
    starts included) per run, medians, and whether the artifacts and the eval JSON are equal."""
    compile_args = [str(pt2), "--calib", str(calib), "--report-samples", str(report_samples), "--time-passes", "-q"]
    eval_args = ["--data", str(test), "-T", "4"]
    times: dict[str, list[float]] = {"compile_1proc_s": [], "compile_2proc_s": [], "eval_1proc_s": [],
                                     "eval_2proc_s": []}
    # inside the compile (rank 0's --time-passes): what the ranks share, without the interpreter starts
    phases = ("calibrate", "report-simulation", "total")
    for n in (1, 2):
        for phase in phases:
            times[f"compile_{n}proc_{phase}_s"] = []
    for _ in range(repeats):
        one: dict = {}
        two: dict = {}
        times["compile_1proc_s"].append(one_process(["compile", *compile_args, "-o", str(work / "c1")], one))
        times["compile_2proc_s"].append(torchrun(["compile", *compile_args, "-o", str(work / "c2")], two))
        for n, steps in ((1, one), (2, two)):
            for phase in phases:
                times[f"compile_{n}proc_{phase}_s"].append(steps[phase])
        times["eval_1proc_s"].append(one_process(["eval", str(work / "c1"), *eval_args, "--json", str(work / "e1.json")]))
        times["eval_2proc_s"].append(torchrun(["eval", str(work / "c1"), *eval_args, "--json", str(work / "e2.json")]))
        print("one against two", json.dumps({k: v[-1] for k, v in times.items()}), flush=True)
    ev1, ev2 = json.loads((work / "e1.json").read_text()), json.loads((work / "e2.json").read_text())
    out: dict = {k: statistics.median(v) for k, v in times.items()}
    out["runs"] = times
    out["compile_speedup"] = out["compile_1proc_s"] / out["compile_2proc_s"]
    for phase in phases:
        out[f"compile_{phase}_speedup"] = out[f"compile_1proc_{phase}_s"] / out[f"compile_2proc_{phase}_s"]
    out["eval_speedup"] = out["eval_1proc_s"] / out["eval_2proc_s"]
    out["compile_byte_identical"] = same_dirs(work / "c1", work / "c2")
    out["eval_identical"] = ev1 == ev2
    out["eval_accuracy"] = ev1["results"][0]["accuracy"]
    out["eval_images"] = eval_images
    out["report_samples"] = report_samples
    out["load_average"] = os.getloadavg()
    return out


def distributed_only(args: argparse.Namespace, saved: Path) -> None:
    """Rerun only the one-against-two rows; everything else stays as last measured."""
    previous = json.loads(saved.read_text())
    few = previous["calib_images"][0]
    with tempfile.TemporaryDirectory(prefix="snnc-scale-") as tmp:
        work = Path(tmp)
        _, pt2 = make_model(work)
        calib = make_data(work / f"calib{few}.npz", few, 1)
        test = make_data(work / "test.npz", args.eval_images, 3)
        previous["distributed"] = one_against_two(work, pt2, calib, test, previous["report_samples"],
                                                  args.eval_images, args.dist_repeats)
    path = write_json("scale.json", previous)
    print(table(previous))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="1000,8000", help="the two calibration set sizes (issue 13: 1000,8000)")
    ap.add_argument("--report-samples", default="256,64",
                    help="--report-samples of the compiles at the first size, one compile each (the first: the "
                         "8,000-image compile's)")
    ap.add_argument("--compile-time-only", action="store_true",
                    help="only the compiles at the first size and the simulation before/after; keep the 8,000-image "
                         "and torchrun results of benchmarks/results/scale.json")
    ap.add_argument("--sim-repeats", type=int, default=2, help="runs of each simulation order (before/after)")
    ap.add_argument("--distributed-only", action="store_true",
                    help="only the one-process against torchrun rows; keep the rest of benchmarks/results/scale.json")
    ap.add_argument("--dist-repeats", type=int, default=2, help="runs of each of the one/two-process commands")
    # 256 images are 4 of snnc eval's 64-sample batches: both ranks get work
    ap.add_argument("--eval-images", type=int, default=256)
    ap.add_argument("--table", action="store_true", help="print the table of benchmarks/results/scale.json and stop")
    args = ap.parse_args()
    saved = Path(__file__).parent / "results" / "scale.json"
    if args.table:
        print(table(json.loads(saved.read_text())))
        return
    hygiene(2)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if args.distributed_only:
        distributed_only(args, saved)
        return
    few, many = (int(v) for v in args.images.split(","))
    report_samples = [int(v) for v in args.report_samples.split(",")]
    previous = json.loads(saved.read_text()) if args.compile_time_only else {}
    results: dict = {"model": "torchvision resnet18, 10 classes, random weights", "input": [3, SIZE, SIZE],
                     "pipeline": "ann-to-snn", "timesteps": 8, "calib_images": [few, many],
                     "report_samples": report_samples[0]}
    with tempfile.TemporaryDirectory(prefix="snnc-scale-") as tmp:
        work = Path(tmp)
        model, pt2 = make_model(work)
        calib_few = make_data(work / f"calib{few}.npz", few, 1)
        calib_many = make_data(work / f"calib{many}.npz", many, 2)
        test = make_data(work / "test.npz", args.eval_images, 3)
        forward_data = calib_many if many >= 1000 else calib_few

        fwd = forward_seconds(model, forward_data, n=few)
        results["torch_forward_s"] = fwd
        n_ref = min(1000, many)  # the goal's reference: one forward pass over 1,000 images
        results["torch_forward_ref_images"] = n_ref
        refs = [forward_seconds(model, forward_data, n=n_ref)]
        print(f"torch forward over {few} images: {fwd:.2f} s; over {n_ref}: {refs[0]:.2f} s", flush=True)

        runs = {}
        jobs = [(f"few_rs{n}", calib_few, n) for n in report_samples]
        if not args.compile_time_only:
            jobs.append(("many", calib_many, report_samples[0]))
        for tag, data, n in jobs:
            runs[tag] = compile_run(work, tag, [str(pt2), "--calib", str(data), "-o", str(work / f"out_{tag}"),
                                                "--report-samples", str(n)])
            runs[tag]["report_samples"] = n
            print(tag, json.dumps(runs[tag]), flush=True)
            refs.append(forward_seconds(model, forward_data, n=n_ref))  # the load drifts: measure again
            print(f"torch forward over {n_ref}: {refs[-1]:.2f} s", flush=True)
        head = f"few_rs{report_samples[0]}"
        runs["few"] = runs[head]
        results["simulation"] = simulation_before_after(work / f"out_{head}", calib_few, report_samples[0],
                                                        args.sim_repeats)
        print("simulation", json.dumps(results["simulation"]), flush=True)
        refs.append(forward_seconds(model, forward_data, n=n_ref))
        results["torch_forward_ref_runs_s"] = refs
        results["torch_forward_ref_cpu_s"] = statistics.median(FORWARD_CPU_S[1:])  # the same runs, CPU time
        results["simulation"]["forward_cpu_s"] = results["torch_forward_ref_cpu_s"]
        results["torch_forward_ref_s"] = statistics.median(refs)
        results["compiles"] = runs
        results["startup_s"] = runs["few"]["process_s"] - runs["few"]["steps"]["total"]
        results["compile_excluding_calibration_s"] = excluding_calibration(runs["few"]["steps"])
        results["compile_excluding_calibration_by_report_samples"] = {
            str(n): excluding_calibration(runs[f"few_rs{n}"]["steps"]) for n in report_samples}
        results["calibrate_s"] = runs["few"]["steps"]["calibrate"]
        results["calibration_vs_forward"] = results["calibrate_s"] / fwd
        if args.compile_time_only:  # the 8,000-image compile and torchrun: as last measured
            runs["many"] = previous["compiles"]["many"]
            results["many_and_distributed_from"] = "the previous run (not rerun: nothing they measure changed)"
            # the RSS ratio and the 8,000-image compile belong to the run that made them (kept through reruns)
            runs["few_previous"] = previous["compiles"].get("few_previous", previous["compiles"]["few"])
            results["previous_torch_forward_ref_s"] = previous.get("previous_torch_forward_ref_s",
                                                                   previous["torch_forward_ref_s"])
            for key in ("calibrate_many_s", "compile_excluding_calibration_many_s", "distributed", "peak_rss_ratio",
                        "calibration_many_vs_forward_ref", "calibration_many_vs_forward_scaled"):
                results[key] = previous[key]
        else:
            results["compile_excluding_calibration_many_s"] = excluding_calibration(runs["many"]["steps"])
            results["calibrate_many_s"] = runs["many"]["steps"]["calibrate"]
            results["peak_rss_ratio"] = runs["many"]["maxrss_mib"] / runs["few"]["maxrss_mib"]
            results["calibration_many_vs_forward_ref"] = results["calibrate_many_s"] / results["torch_forward_ref_s"]
            # against a forward over the same images: the 1,000-image forward's median scaled (not run: it
            # would take 8 of them on this machine)
            results["calibration_many_vs_forward_scaled"] = results["calibrate_many_s"] / (
                results["torch_forward_ref_s"] * many / n_ref)

        if not args.compile_time_only:  # one process against two (torchrun, gloo), side by side
            results["distributed"] = one_against_two(work, pt2, calib_few, test, report_samples[0],
                                                     args.eval_images, args.dist_repeats)
    path = write_json("scale.json", results)
    print(table(results))
    print(f"wrote {path}")


def _simulation_rows(sim: dict | None) -> list[tuple[str, str, str]]:
    if not sim:
        return []
    tm, lm = sim["time_major"], sim["layer_major"]
    return [
        (f"the simulation alone, {sim['samples']} samples x {sim['timesteps']} steps: time-major (before) / "
         f"layer-major (after), CPU time, median of {sim['repeats']}",
         f"{tm['cpu_s']['median']:.1f} s / {lm['cpu_s']['median']:.1f} s",
         f"{sim['speedup_cpu']:.2f}x (ranges {tm['cpu_s']['min']:.1f}-{tm['cpu_s']['max']:.1f} / "
         f"{lm['cpu_s']['min']:.1f}-{lm['cpu_s']['max']:.1f} s)"
         + (f"; the 1000-image forward: {sim['forward_cpu_s']:.1f} s CPU" if "forward_cpu_s" in sim else "")),
        ("the same, wall time", f"{tm['wall_s']['median']:.1f} s / {lm['wall_s']['median']:.1f} s",
         f"{sim['speedup_wall']:.2f}x; predictions agree on {100 * sim['predictions_agree']:.1f} %, spike counts "
         f"within {100 * sim['spikes_max_rel_diff']:.2f} % per layer"),
    ]


def table(r: dict) -> str:
    few, many = r["calib_images"]
    c, d = r["compiles"], r["distributed"]
    prev = " (previous run)" if "many_and_distributed_from" in r else ""
    dprev = "" if "runs" in d else prev  # one_against_two's rows are rerun alone (--distributed-only)
    dmed = f", whole commands, median of {len(d['runs']['compile_1proc_s'])}" if "runs" in d else ""
    rows = [
        (f"peak RSS, compile with {few} calibration images (report-samples {c['few'].get('report_samples', 64)})",
         f"{c['few']['maxrss_mib']:.0f} MiB", ""),
        *([(f"peak RSS, compile with {few} calibration images (previous run)",
            f"{c['few_previous']['maxrss_mib']:.0f} MiB", "")] if "few_previous" in c else []),
        (f"peak RSS, compile with {many} calibration images{prev}", f"{c['many']['maxrss_mib']:.0f} MiB",
         f"{r['peak_rss_ratio']:.2f}x (goal <= 1.2x)"),
        (f"torch forward pass over {few} images (first, before the compiles)", f"{r['torch_forward_s']:.1f} s", ""),
        (f"torch forward pass over {r['torch_forward_ref_images']} images (median of "
         f"{len(r['torch_forward_ref_runs_s'])}: before, between, after the compiles)",
         f"{r['torch_forward_ref_s']:.1f} s",
         f"range {min(r['torch_forward_ref_runs_s']):.1f}-{max(r['torch_forward_ref_runs_s']):.1f} s"),
        *[(f"compile excluding calibration, {few} images (report-samples {n})", f"{v:.1f} s",
           f"{v / r['torch_forward_ref_s']:.2f}x the {r['torch_forward_ref_images']}-image forward (goal < 1)")
          for n, v in r.get("compile_excluding_calibration_by_report_samples",
                            {str(r["report_samples"]): r["compile_excluding_calibration_s"]}).items()],
        *[(f"of which the one SNN simulation (report-simulation), report-samples {n}",
           f"{c[f'few_rs{n}']['steps']['report-simulation']:.1f} s", f"{n} samples x {r['timesteps']} steps")
          for n in r.get("compile_excluding_calibration_by_report_samples", {}) if f"few_rs{n}" in c],
        ("of which load (model file -> IR)", f"{c['few']['steps']['load']:.1f} s", ""),
        (f"compile excluding calibration, {many} images{prev}", f"{r['compile_excluding_calibration_many_s']:.1f} s",
         f"{r['compile_excluding_calibration_many_s'] / r.get('previous_torch_forward_ref_s', r['torch_forward_ref_s']):.2f}x"
         + (" that run's forward" if prev else "")),
        *_simulation_rows(r.get("simulation")),
        ("starting Python, importing torch and snnc (outside --time-passes)", f"{r['startup_s']:.1f} s", ""),
        (f"calibrate pass on {few} images", f"{r['calibrate_s']:.1f} s",
         f"{r['calibration_vs_forward']:.2f}x the first {few}-image forward"
         + (f", {r['calibrate_s'] / r['torch_forward_ref_s']:.2f}x the median"
            if few == r["torch_forward_ref_images"] else "") + " (goal <= 1.5x)"),
        (f"calibrate pass on {many} images{prev}", f"{r['calibrate_many_s']:.1f} s",
         f"{r['calibration_many_vs_forward_ref']:.2f}x the {r['torch_forward_ref_images']}-image forward"
         + (" (goal <= 1.5x)" if r["torch_forward_ref_images"] == many else
            f"; {r['calibration_many_vs_forward_scaled']:.2f}x the median scaled to {many} images (goal <= 1.5x)")),
        (f"compile with {few} images, 1 process / 2 processes (torchrun, gloo){dprev}{dmed}",
         f"{d['compile_1proc_s']:.1f} s / {d['compile_2proc_s']:.1f} s",
         f"speedup {d['compile_speedup']:.2f}x, byte-identical: {d['compile_byte_identical']}"),
        *[(f"of which {phase} (rank 0's --time-passes), 1 / 2 processes{dmed}",
           f"{d[f'compile_1proc_{phase}_s']:.1f} s / {d[f'compile_2proc_{phase}_s']:.1f} s",
           f"speedup {d[f'compile_{phase}_speedup']:.2f}x")
          for phase in ("calibrate", "report-simulation", "total") if f"compile_{phase}_speedup" in d],
        (f"eval T=4 on {d['eval_images']} images, 1 / 2 processes{dprev}{dmed}",
         f"{d['eval_1proc_s']:.1f} s / {d['eval_2proc_s']:.1f} s",
         f"speedup {d['eval_speedup']:.2f}x, identical: {d['eval_identical']}"),
    ]
    lines = ["| measure | value | against the goal |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {g} |" for a, b, g in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

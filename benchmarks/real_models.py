"""Benchmark: unmodified torchvision classifiers, trained on coloured digits, converted to SNNs.

The task: the scikit-learn digits (examples/digits's split) upsampled to 32x32 and coloured (a
random foreground and background colour per image, seeded), 10 classes.  Per model
(``torchvision.models.<name>(weights=None, num_classes=10)``, trained here on the CPU with Adam;
checkpoints cached in benchmarks/models/real/, not committed): the ANN's test accuracy, then the
SNN's for ``ann-to-snn`` and ``ann-to-snn-fast`` at each T (accuracy, spikes and synaptic ops per
sample, 45 nm energy relative to the ANN's MAC energy, compile time), and SpikingJelly's ann2snn
converter (modes 'max' and '99.9%') on the same checkpoint where it converts.  Writes
benchmarks/results/real_models.json, docs/img/real_models.png and docs/real_models.md.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/real_models.py [--models resnet18,...] [--timesteps 4,8,16,32,64]
        [--test-images N] [--retrain]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import IMG, ROOT, hygiene, plot_accuracy_vs_timesteps, write_json  # noqa: E402
from conversion import _fmt, _row, accuracy, ann_macs_of, evaluate_spikingjelly  # noqa: E402

sys.path.insert(0, str(ROOT / "examples" / "digits"))
from data import load_digits_splits  # noqa: E402

from snnc.backends.torch.simulator import TorchSimulator  # noqa: E402
from snnc.errors import SnncError  # noqa: E402
from snnc.frontend.fx import import_module  # noqa: E402
from snnc.pass_manager import CalibrationData, Instrument, PassContext, PassManager, override_options  # noqa: E402

MODELS = ["resnet18", "mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_1", "densenet121"]
# epochs on the 1437 training images (one-cycle schedule): a few minutes each on a shared 2-core CPU;
# densenet121 is the slowest per epoch
# (shufflenet_v2_x0_5 reached 40 % in 8 epochs, squeezenet1_1 75 % in 10, mobilenet_v2 59 % in 6 at 1e-3:
# the small ones get more epochs, shufflenet and mobilenet a larger step)
EPOCHS = {"resnet18": 5, "mobilenet_v2": 12, "shufflenet_v2_x0_5": 25, "squeezenet1_1": 25, "densenet121": 3}
LR = {"shufflenet_v2_x0_5": 3e-3, "mobilenet_v2": 2e-3}
CACHE = ROOT / "benchmarks" / "models" / "real"
PIPELINES = ["ann-to-snn", "ann-to-snn-fast"]
# pipelines whose passes read T (ann-to-snn-fast: MSE thresholds, burst limits and compression for the
# target T; ann-to-snn-corrected: bias-correct at the target T) are compiled once per T (--fast-timesteps);
# ann-to-snn's graph does not depend on T: compiled once
PER_T = {"ann-to-snn-fast", "ann-to-snn-corrected"}


def coloured_digits(seed: int = 0, colour_seed: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits split of examples/digits as 3x32x32 colour images in [0, 1]: bilinear upsampling of
    the 8x8 grey levels d, then x = (1 − d)·background + d·foreground, one seeded pair of colours per
    image (foreground channels in [0.4, 1], background in [0, 0.35]: the digit stays the brighter).
    ``colour_seed`` draws other colours for the same split (``seed`` alone sets both): more labelled
    images of the task from the same digits, for statistics that need more than 360 test images."""
    x_train, y_train, x_test, y_test = load_digits_splits(seed)
    rng = np.random.default_rng(seed if colour_seed is None else colour_seed)

    def colour(x: np.ndarray) -> np.ndarray:
        d = F.interpolate(torch.as_tensor(x), size=(32, 32), mode="bilinear", align_corners=False).numpy()
        d = np.clip(d, 0.0, 1.0)
        fg = rng.uniform(0.4, 1.0, (len(x), 3, 1, 1))
        bg = rng.uniform(0.0, 0.35, (len(x), 3, 1, 1))
        return ((1.0 - d) * bg + d * fg).astype(np.float32)

    return colour(x_train), y_train, colour(x_test), y_test


def build(name: str) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, num_classes=10)


def trained(name: str, x: np.ndarray, y: np.ndarray, retrain: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The model trained on (x, y), from the cache when it is there; and how it was trained."""
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")  # checkpoints are tens of MB: never committed
    path, meta_path = CACHE / f"{name}.pt", CACHE / f"{name}.json"
    model = build(name)
    if path.exists() and meta_path.exists() and not retrain:
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), json.loads(meta_path.read_text())
    epochs, lr = EPOCHS[name], LR.get(name, 1e-3)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    t0 = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(f"  {name} epoch {epoch + 1}/{epochs}: loss {total / len(xt):.4f} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    model.eval()
    meta = {"epochs": epochs, "lr": lr, "optimizer": "adam, one-cycle, weight decay 1e-4, batch 64",
            "train_seconds": time.perf_counter() - t0}
    torch.save(model.state_dict(), path)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return model, meta


def wait_for(name: str, poll_s: float = 30.0) -> None:
    """Block until another process (``--train-only``) has cached the checkpoint of ``name``."""
    while not (CACHE / f"{name}.json").exists():
        time.sleep(poll_s)


def spikingjelly_rows(name: str, model: nn.Module, data, ts: list[int], ann_macs: float,
                      skipped: list[dict[str, Any]], mode: str = "99.9%") -> list[dict[str, Any]]:
    """SpikingJelly's ann2snn (RateCodingRecipe, one normalisation ``mode``) at each T, counted by
    benchmarks/conversion.py's hooks (IF spikes; events x fan-out on spikes, MACs on analog input)."""
    import copy

    try:
        from spikingjelly.activation_based import ann2snn
    except ImportError:
        print("spikingjelly not installed: skipping its baseline")
        return []
    x_train, y_train, x_test, y_test = data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x_train), torch.tensor(y_train)),
                                         batch_size=128)
    t0 = time.perf_counter()
    try:
        snn = ann2snn.FXConverter(recipe=ann2snn.RateCodingRecipe(dataloader=loader, mode=mode)).convert(
            copy.deepcopy(model))
    except Exception as e:  # its converter's own limits: report them
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        print(f"{name} spikingjelly {mode}: could not convert: {reason}", flush=True)
        skipped.append({"model": name, "method": f"spikingjelly {mode}", "reason": reason})
        return []
    conv_time = time.perf_counter() - t0
    return evaluate_spikingjelly(snn, name, mode, ts, x_test, y_test, ann_macs, conv_time)


class PassClock(Instrument):
    """Each pass's wall and CPU seconds (the --time-passes of the rows), printed as it finishes: a long
    compile shows where it is."""

    def __init__(self, label: str) -> None:
        self.label, self.seconds = label, {}
        self._wall = self._cpu = 0.0

    def before(self, p, graph) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def after(self, p, graph) -> None:
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        self.seconds[str(p)] = {"wall": wall, "cpu": cpu}
        if wall > 1.0:
            print(f"  {self.label} {p}: {wall:.1f} s ({cpu:.1f} s CPU)", flush=True)


def snnc_rows(name: str, model: nn.Module, data, ts: list[int], ann_macs: float, skipped: list[dict[str, Any]],
              calib: int = 256, fast_ts: list[int] | None = None, pipelines: list[str] = PIPELINES,
              pass_options: list[str] | None = None) -> list[dict[str, Any]]:
    """Per pipeline and T: compile (timed) and simulate the test images.  ``fast_ts``: the T at
    which ann-to-snn-fast runs (its adafire search is most of the run: see docs/real_models.md)."""
    x_train, y_train, x_test, y_test = data
    sim = TorchSimulator(batch_size=128)
    t0 = time.perf_counter()
    graph = import_module(model, torch.as_tensor(x_test[:1]), name)
    import_s = time.perf_counter() - t0
    rows = []
    for pipe in pipelines:
        # ann-to-snn is compiled once and every T read from one run of max(T) steps
        # (TorchSimulator.run_snn_steps); ann-to-snn-fast is compiled and run at each T
        for group in ([[t] for t in (fast_ts or [])] if pipe in PER_T else [ts]):
            # a seeded subset of the training images; batches of 32: adafire simulates one batch per
            # layer and burst limit (hundreds of runs on the deep models)
            ctx = PassContext(calibration=CalibrationData(x_train[:calib], y_train[:calib], batch_size=32),
                              simulator=sim, timesteps=group[0], seed=0)
            clock = PassClock(f"{name} {pipe} T={group[0]}")
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                passes = PassManager.parse(pipe).passes
                # --pass-option PASS.OPTION=VALUE: on the pipelines that run PASS (listed in the row)
                mine = [o for o in pass_options or [] if o.split(".")[0] in {p.name for p in passes}]
                snn = PassManager(override_options(passes, mine), instruments=[clock]).run(graph, ctx)
            except SnncError as e:
                print(f"{name} snnc {pipe}: not applicable: {e}", flush=True)
                skipped.append({"model": name, "method": f"snnc {pipe}", "reason": str(e)})
                break
            compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0
            t0 = time.perf_counter()
            runs = sim.run_snn_steps(snn, x_test, group)
            sim_s = time.perf_counter() - t0
            for t, run in runs.items():
                rows.append(_row(name, f"snnc {pipe}", t, run.predictions, y_test, sum(run.spikes.values()),
                                 sum(run.sops.values()), sum(run.hoisted_macs.values()), ann_macs, compile_s,
                                 float(np.mean(run.steps_used))))
                rows[-1]["import_s"] = import_s
                rows[-1]["compile_cpu_s"] = compile_cpu_s  # process CPU time: means more than wall under load
                rows[-1]["pass_seconds"] = clock.seconds
                if mine:
                    rows[-1]["pass_options"] = mine
                # what the searches chose: a faster compile must choose the same (docs/real_models.md)
                rows[-1]["choices"] = {k: ctx.results[k] for k in ("adafire", "compress-spikes") if k in ctx.results}
                rows[-1]["simulate_s"] = sim_s  # of the whole group of T
                rows[-1]["macs_every_step"] = float(sum(run.macs.values()))
                print(_fmt(rows[-1]), flush=True)
    return rows


def plot(rows: list[dict[str, Any]], ann_acc: dict[str, float], path: Path) -> None:
    plot_accuracy_vs_timesteps(rows, ann_acc, path)


def _at(rows: list[dict[str, Any]], model: str, method: str, t: int) -> float | None:
    for r in rows:
        if r["model"] == model and r["method"] == method and r["timesteps"] == t:
            return float(r["accuracy"])
    return None


def goals(rows: list[dict[str, Any]], ann_acc: dict[str, float]) -> list[str]:
    """One line per model: the issue's goals, met or not."""
    lines = []
    for m, acc in ann_acc.items():
        parts = []
        for method, t in (("snnc ann-to-snn", 32), ("snnc ann-to-snn-fast", 8), ("snnc ann-to-snn-corrected", 32)):
            got = _at(rows, m, method, t)
            if got is None and method.endswith("corrected"):
                continue  # run on some models only (docs/analog_paths.md)
            if got is None:
                parts.append(f"{method} at T={t}: not run")
                continue
            gap = 100 * (acc - got)
            side = f"{gap:.1f} points below" if gap >= 0 else f"{-gap:.1f} points above"
            parts.append(f"{method} at T={t}: {100 * got:.1f} % ({side} the ANN; "
                         f"{'met' if round(gap, 6) <= 1.0 else 'not met'})")
        sj = {r["timesteps"]: r["accuracy"] for r in rows if r["model"] == m and r["method"].startswith("spikingjelly")}
        ours = {r["timesteps"]: r["accuracy"] for r in rows if r["model"] == m and r["method"] == "snnc ann-to-snn"}
        both = sorted(set(sj) & set(ours))
        if both:
            behind = [t for t in both if ours[t] < sj[t]]
            parts.append("ann-to-snn at least as accurate as SpikingJelly at every T: "
                         + ("met" if not behind else f"not met (T = {', '.join(map(str, behind))})"))
        lines.append(f"* {m}: " + "; ".join(parts))
    return lines


# Which torchvision classifiers convert: a pointer to the table of docs/analog_paths.md
SUPPORT = """\
## Which torchvision classifiers convert

docs/analog_paths.md ("Which torchvision classifiers convert") has the table, checked by
tests/test_torchvision_zoo.py: every classifier family of torchvision, the 14 that convert (ResNet,
ResNeXt, Wide ResNet, VGG with and without BatchNorm, AlexNet, SqueezeNet, ShuffleNetV2,
MobileNetV2, MNASNet, RegNetX, DenseNet, GoogLeNet, Inception-v3) with what each needs, and the 9
refused at import with every offending op listed (RegNetY, EfficientNet and EfficientNetV2,
MobileNetV3, ConvNeXt, ViT, Swin and Swin V2, MaxViT: SiLU, Hardswish, GELU, gating products,
LayerNorm, attention), and why.
"""


def markdown(rows, ann_acc, meta, skipped, n_test: int, wall: float, n_calib: int, notes: str = "") -> str:
    lines = [
        "# Real models: torchvision classifiers trained on coloured digits", "",
        "Generated by `python benchmarks/real_models.py` (CPU, 2 threads, shared machine: times are indicative).  "
        "Task: the scikit-learn digits split of examples/digits, upsampled to 3x32x32 and coloured (one random "
        "foreground and background colour per image), 1437 training images; accuracy on "
        f"{n_test} test images.  Each model is the unmodified `torchvision.models.<name>(weights=None, "
        "num_classes=10)`, trained here with Adam.  snnc rows: the named pipeline (`ann-to-snn` compiled once, "
        "its passes do not read T, and every T read from one simulation of the largest T, which gives the "
        "same floats as one run per T; `ann-to-snn-fast` compiled and run at each T shown) with the first "
        f"{n_calib} training images as calibration data, run by the torch simulator; spikes and synaptic ops per sample "
        "and energy as in report.json (45 nm model, relative to the ANN's MAC energy; the first layer, which "
        "reads the constant direct-coded input, counted once).  Compile time is the pass pipeline after "
        "import.  SpikingJelly rows: `ann2snn` (its FX converter, RateCodingRecipe) on the same checkpoint, "
        "IF neurons, T steps of the same input (one run of the largest T, read at each T).  `ann-to-snn-fast` stops a sample early when its readout "
        "is confident (adaptive-timesteps): its column 'mean T' is the steps used.", "",
        "Goals (issue 12): `ann-to-snn` within 1 point of the ANN at T = 32, `ann-to-snn-fast` within 1 point "
        "at T = 8, `ann-to-snn` at least as accurate as SpikingJelly's ann2snn at every T.", "", *goals(rows, ann_acc), "", "![accuracy against T](img/real_models.png)", ""]
    for m, acc in ann_acc.items():
        info = meta[m]
        lines += [f"## {m} (ANN accuracy {acc:.4f}; {info['epochs']} epochs, trained in "
                  f"{info['train_seconds']:.0f} s; {info['ann_macs']:,.0f} MACs)", "",
                  "| method | T | accuracy | spikes/sample | SOPs/sample | E / E_ANN | mean T | compile (s) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["model"] == m:
                lines.append(f"| {r['method']} | {r['timesteps']} | {r['accuracy']:.4f} | "
                             f"{r['spikes_per_sample']:.0f} | {r['sops']:.3g} | {r['energy_rel_ann']:.3f} | "
                             f"{r['mean_timesteps_used']:.2f} | {r['conversion_s']:.1f} |")
        lines.append("")
    for sk in skipped:
        lines.append(f"* {sk['model']}, {sk['method']}: not applicable: {sk['reason']}")
    lines += ["", f"Whole run: {wall / 60:.0f} min.", "", notes, SUPPORT]
    return "\n".join(lines)


def outputs(out: str) -> tuple[Path, Path]:
    """Where the doc and the plot of result ``out`` go: docs/ for the default name (docs/real_models.md is
    in mkdocs.yml's nav), benchmarks/results/ for any other (a part of a split run, merged later with
    --from-json --merge: a page under docs/ outside the nav fails ``mkdocs build --strict``)."""
    if out == "real_models":
        return ROOT / "docs" / f"{out}.md", IMG / f"{out}.png"
    return ROOT / "benchmarks" / "results" / f"{out}.md", ROOT / "benchmarks" / "results" / f"{out}.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--timesteps", default="4,8,16,32,64")
    ap.add_argument("--test-images", type=int, default=0, help="the first N test images (0: all 360)")
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--no-spikingjelly", action="store_true")
    ap.add_argument("--train-only", action="store_true", help="train (or load) the models and stop")
    ap.add_argument("--out", default="real_models", help="name of the JSON / doc / plot written (the doc and "
                    "plot of a name other than real_models go to benchmarks/results/, not docs/)")
    ap.add_argument("--wait", action="store_true", help="wait for a --train-only process to cache each model")
    ap.add_argument("--calib-images", type=int, default=256, help="calibration images (the first N training images)")
    ap.add_argument("--fast-timesteps", default="4,8,16", help="T for ann-to-snn-fast and "
                    "ann-to-snn-corrected, compiled once per T (their passes read T)")
    ap.add_argument("--fast-models", default=",".join(MODELS), help="models on which ann-to-snn-fast runs")
    ap.add_argument("--pipelines", default=",".join(PIPELINES))
    ap.add_argument("--pass-option", action="append", default=[], help="PASS.OPTION=VALUE for the pipelines "
                    "that run PASS (as snnc compile's --pass-option; kept in the rows)")
    ap.add_argument("--from-json", action="store_true", help="only write the doc and plot from the JSON")
    ap.add_argument("--merge", default="", help="with --from-json: also read these result names (merged in: "
                    "their rows replace those of the same model, method and T)")
    ap.add_argument("--notes", default="", help="with --from-json: a text file kept in the JSON and the doc "
                    "(what the run left out, and why)")
    args = ap.parse_args()
    started = time.perf_counter()
    if args.from_json:
        res = json.loads((ROOT / "benchmarks" / "results" / f"{args.out}.json").read_text())
        for part in filter(None, args.merge.split(",")):  # runs of other models in parallel processes
            more = json.loads((ROOT / "benchmarks" / "results" / f"{part}.json").read_text())
            for key in ("ann_accuracy", "models"):
                res[key].update(more[key])
            # a rerun replaces the rows of the same model, method and T, and keeps every other row
            fresh = {(r["model"], r["method"], r["timesteps"]) for r in more["rows"]}
            res["rows"] = [r for r in res["rows"] if (r["model"], r["method"], r["timesteps"]) not in fresh]
            res["rows"] += more["rows"]
            res["skipped"] += [sk for sk in more["skipped"] if sk not in res["skipped"]]
            res["wall_seconds"] = max(res["wall_seconds"], more["wall_seconds"])
        if args.notes:
            res["notes"] = Path(args.notes).read_text()
        write_json(f"{args.out}.json", {k: v for k, v in res.items() if k != "machine"})
        doc, png = outputs(args.out)
        plot(res["rows"], res["ann_accuracy"], png)
        doc.write_text(markdown(res["rows"], res["ann_accuracy"], res["models"],
                                                               res["skipped"], res["test_images"],
                                                               res["wall_seconds"], res["calib_images"],
                                                               res.get("notes", "")))
        return
    hygiene()
    x_train, y_train, x_test, y_test = coloured_digits()
    if args.test_images:
        x_test, y_test = x_test[: args.test_images], y_test[: args.test_images]
    data = (x_train, y_train, x_test, y_test)
    ts = [int(t) for t in args.timesteps.split(",")]
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    ann_acc: dict[str, float] = {}
    meta: dict[str, dict[str, Any]] = {}
    for name in args.models.split(","):
        if args.wait:
            wait_for(name)
        model, meta[name] = trained(name, x_train, y_train, args.retrain)
        ann_acc[name] = accuracy(model, x_test, y_test)
        meta[name]["ann_macs"] = macs = ann_macs_of(model, x_test.shape[1:])
        print(f"== {name}: ANN accuracy {ann_acc[name]:.4f}, {macs:,.0f} MACs", flush=True)
        if args.train_only:
            continue
        fast_ts = [int(t) for t in args.fast_timesteps.split(",") if t] if name in args.fast_models.split(",") else []
        rows += snnc_rows(name, model, data, ts, macs, skipped, args.calib_images, fast_ts,
                          args.pipelines.split(","), args.pass_option)
        if not args.no_spikingjelly:
            rows += spikingjelly_rows(name, model, data, ts, macs, skipped)
        # after each model, so that a long run leaves what it has
        wall = time.perf_counter() - started
        write_json(f"{args.out}.json", {"ann_accuracy": ann_acc, "models": meta, "rows": rows, "skipped": skipped,
                                        "timesteps": ts, "test_images": len(x_test), "calib_images": args.calib_images,
                                        "wall_seconds": wall})
    if args.train_only:
        return
    wall = time.perf_counter() - started
    doc, png = outputs(args.out)
    plot(rows, ann_acc, png)
    doc.write_text(markdown(rows, ann_acc, meta, skipped, len(x_test), wall,
                                                           args.calib_images))
    print(f"done in {wall:.0f} s")


if __name__ == "__main__":
    main()

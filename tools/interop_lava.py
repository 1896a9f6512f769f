"""``make interop-lava``: the digits CNN and MLP compiled for ``--target loihi``, run in Lava, and compared
with snnc's bit-accurate simulator spike for spike.

    .venv/bin/python tools/interop_lava.py [--lava-python .venv-lava/bin/python] [--out out-lava]
        [--data examples/digits/test.npz] [--models cnn,mlp] [--limit N] [--reuse]

For each model: ``snnc compile examples/digits/<model>.pt2 --calib examples/digits/train.npz --target
loihi -o OUT/<model>`` (skipped with ``--reuse`` when OUT/<model> exists); snnc's side is
``snnc.backends.loihi.target.run_net`` (what ``snnc run --backend loihi`` runs) with every layer's
spikes kept; Lava's side is the artifact's own ``run_lava.py`` run by the Python 3.10 interpreter that
has lava-nc 0.10 and lava-dl 0.6, writing its predictions, readout voltages and every block's spikes to
``OUT/<model>/lava.npz``.  The two must agree exactly: every prediction, every readout voltage, every
spike of every layer at every step.  Prints a table, writes ``OUT/interop_lava.json``, and exits 1 on
any difference (or when Lava fails).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"


def compile_model(model: str, out: Path) -> None:
    snnc = Path(sys.executable).with_name("snnc")
    cmd = [str(snnc), "compile", str(DIGITS / f"{model}.pt2"), "--calib", str(DIGITS / "train.npz"),
           "--target", "loihi", "-o", str(out)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def snnc_side(artifact: Path, x: np.ndarray) -> dict[str, Any]:
    """Predictions, readout voltage and every neuron layer's spikes of the bit-accurate simulator."""
    from snnc.backends.loihi.lower import lower
    from snnc.backends.loihi.target import run_net
    from snnc.ir import load_graph

    graph = load_graph(artifact)
    net = lower(graph)
    run = run_net(net, x, int(graph.attrs.timesteps or 0), keep=True)
    return {"predictions": run.predictions, "voltage": None if run.voltage is None else run.voltage,
            "outputs": run.outputs, "steps": run.steps}


def lava_side(artifact: Path, lava_python: str, data: Path, limit: int | None) -> tuple[dict[str, np.ndarray], float]:
    out = artifact / "lava.npz"
    cmd = [lava_python, str(artifact / "run_lava.py"), "--data", str(data), "-o", str(out)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    with np.load(out) as f:
        return {k: f[k] for k in f.files}, seconds


def compare(model: str, ours: dict[str, Any], lava: dict[str, np.ndarray], y: np.ndarray | None,
            depths: dict[str, int]) -> dict[str, Any]:
    """Every prediction, readout voltage and spike, each layer from the step it is reset on (its depth):
    before it the layer holds what the previous sample left, since Lava runs the samples back to back
    and snnc's simulator starts each one from zero.  The first sample is compared at every step."""
    n = len(ours["predictions"])
    row: dict[str, Any] = {"model": model, "samples": n, "steps_per_sample": ours["steps"]}
    row["predictions_equal"] = int((ours["predictions"] == lava["predictions"]).sum())
    if y is not None:
        row["accuracy_snnc"] = float((ours["predictions"] == y).mean())
        row["accuracy_lava"] = float((lava["predictions"] == y).mean())
    if ours["voltage"] is not None:
        v_ours = np.asarray(ours["voltage"]).reshape(n, -1).astype(np.int64)
        v_lava = lava["voltage"].reshape(n, -1).astype(np.int64)
        row["voltages_equal"] = int((v_ours == v_lava).all(axis=1).sum())
        row["voltage_max_abs_diff"] = int(np.abs(v_ours - v_lava).max())
    layers = {}
    for key in sorted(k for k in lava if k.startswith("spikes_")):
        name = key[len("spikes_"):]
        a = np.asarray(ours["outputs"][name]).astype(np.int64)
        b = lava[key].astype(np.int64)
        if a.shape != b.shape:
            raise SystemExit(f"{model}: layer {name}: snnc's spikes are {a.shape}, Lava's {b.shape}")
        d = depths[name]
        layers[name] = {
            "depth": d,
            "spikes_snnc": int(a[:, d:].sum()),
            "spikes_lava": int(b[:, d:].sum()),
            "entries_differing": int((a[:, d:] != b[:, d:]).sum()),
            # sample 0 starts from zero state in both: every step must agree, the ones before the reset too
            "first_sample_entries_differing": int((a[0] != b[0]).sum()),
            # later samples: Lava carries the state of the sample before into the steps before the reset
            "before_reset_spikes_snnc": int(a[1:, :d].sum()),
            "before_reset_spikes_lava": int(b[1:, :d].sum()),
        }
    row["layers"] = layers
    for key in ("spikes_snnc", "spikes_lava", "entries_differing", "first_sample_entries_differing",
                "before_reset_spikes_snnc", "before_reset_spikes_lava"):
        row[key] = sum(v[key] for v in layers.values())
    row["equal"] = (row["predictions_equal"] == n and row.get("voltages_equal", n) == n and bool(layers)
                    and row["entries_differing"] == 0 and row["first_sample_entries_differing"] == 0)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lava-python", default=str(REPO / ".venv-lava" / "bin" / "python"))
    parser.add_argument("--out", type=Path, default=REPO / "out-lava")
    parser.add_argument("--data", type=Path, default=DIGITS / "test.npz")
    parser.add_argument("--models", default="cnn,mlp")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    parser.add_argument("--reuse", action="store_true", help="keep artifacts already in --out")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with np.load(args.data) as f:
        x = np.asarray(f["x"][: args.limit], dtype=np.float32)
        y = np.asarray(f["y"][: args.limit]) if "y" in f.files else None
    rows = []
    for model in args.models.split(","):
        artifact = args.out / model
        if not (args.reuse and (artifact / "run_lava.py").exists()):
            compile_model(model, artifact)
        ours = snnc_side(artifact, x)
        lava, seconds = lava_side(artifact, args.lava_python, args.data, args.limit)
        mapping = json.loads((artifact / "mapping.json").read_text())
        row = compare(model, ours, lava, y, {layer["name"]: layer["depth"] for layer in mapping["layers"]})
        row["lava_seconds"] = round(seconds, 1)
        rows.append(row)
    print("\nmodel  samples  predictions equal  voltages equal  spikes snnc / Lava (from each layer's reset)  "
          "differing  sample 0 differing  before-reset spikes snnc / Lava  accuracy snnc / Lava  Lava time")
    for r in rows:
        acc = (f"{100 * r['accuracy_snnc']:.2f} / {100 * r['accuracy_lava']:.2f} %" if "accuracy_snnc" in r else "-")
        print(f"{r['model']:5s}  {r['samples']:7d}  {r['predictions_equal']:17d}  {r.get('voltages_equal', '-')!s:>14}  "
              f"{r['spikes_snnc']:>20d} / {r['spikes_lava']:<21d}  {r['entries_differing']:9d}  "
              f"{r['first_sample_entries_differing']:18d}  {r['before_reset_spikes_snnc']:>15d} / "
              f"{r['before_reset_spikes_lava']:<15d}  {acc:>20s}  {r['lava_seconds']:7.1f} s")
    (args.out / "interop_lava.json").write_text(json.dumps(rows, indent=1) + "\n")
    ok = all(r["equal"] for r in rows)
    print("Lava and snnc agree on every prediction, voltage and spike" if ok else "MISMATCH between Lava and snnc")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

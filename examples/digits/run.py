"""`make run`: compile the bundled digits CNN with snnc and show the IR, report and eval table,
then compile it with --target tvm and check that its predictions equal the torch backend's.

Runs the real CLI (the same commands a user types), so this is also a smoke test of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "out" / "digits_cnn"
SNNC = [sys.executable, "-m", "snnc.cli"]


def sh(*args: str) -> None:
    print("\n$ snnc " + " ".join(args), flush=True)
    subprocess.run(SNNC + list(args), check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def main() -> None:
    model, train, test = HERE / "cnn.pt2", HERE / "train.npz", HERE / "test.npz"
    from snnc.pass_manager import available_pipelines

    converting = "ann-to-snn" in available_pipelines()
    args = ["compile", str(model), "-o", str(OUT), "--test-data", str(test)]
    if converting:
        args += ["--calib", str(train), "--timesteps", "8"]
    sh(*args)
    print("\n# IR summary (out/digits_cnn/graph.snnir)")
    print((OUT / "graph.snnir").read_text())
    sh("run", str(OUT), "--data", str(test), "--mode", "ann")
    if converting:
        sh("eval", str(OUT), "--data", str(test), "--timesteps", "1,2,4,8,16")
        tvm_step(model, train, test)
        loihi_step(model, train, test)


def tvm_step(model: Path, train: Path, test: Path) -> None:
    """The same CNN compiled with --target tvm (event kernels, torch-free runtime), run on the
    test set, and checked against the torch backend running the same IR."""
    import importlib.util

    import numpy as np

    if importlib.util.find_spec("tvm") is None:
        print("\n# tvm is not installed: skipping the --target tvm step (pip install 'snnc[tvm]')")
        return
    out = OUT.with_name("digits_cnn_tvm")
    sh("compile", str(model), "--calib", str(train), "--timesteps", "8", "--target", "tvm", "-o", str(out))
    results = {}
    for backend in ("tvm", "torch"):
        path = out.with_name(f"digits_cnn_tvm_predictions_{backend}.npz")
        extra = ["--backend", "torch"] if backend == "torch" else []
        sh("run", str(out), "--data", str(test), "-o", str(path), *extra)
        results[backend] = np.load(path)["predictions"]
    same, n = int(np.sum(results["tvm"] == results["torch"])), len(results["torch"])
    verdict = "equal" if same == n else "DIFFER"
    print(f"\n# tvm artifact vs torch backend: predictions {verdict} ({same}/{n} samples)")
    if verdict != "equal":
        sys.exit(1)


def loihi_step(model: Path, train: Path, test: Path) -> None:
    """The CNN for Loihi 2: hard-reset conversion, quantisation, core mapping, lava-dl netx file;
    then the bit-accurate simulation of the mapped network on the test set."""
    out = OUT.with_name("digits_cnn_loihi")
    sh("compile", str(model), "--calib", str(train), "--test-data", str(test), "--timesteps", "8",
       "--target", "loihi", "-o", str(out))
    print("\n# " + ", ".join(sorted(p.name for p in out.iterdir())))
    sh("run", str(out), "--data", str(test))


if __name__ == "__main__":
    main()

"""`make run`: compile the bundled digits CNN with snnc and show the IR, report and eval table.

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


if __name__ == "__main__":
    main()

"""torch.distributed (issue 13): two gloo processes on the CPU, started by torchrun, compile a
byte-identical artifact and evaluate to the same figures as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from snnc import distributed
from snnc.cli import main

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"

# each rank compiles, then evaluates: one launch, one interpreter start per rank
RANK_SCRIPT = textwrap.dedent("""
    import sys
    from snnc.cli import main

    out, data = sys.argv[1], sys.argv[2]
    for args in (["compile", sys.argv[3], "--calib", data, "--calib-samples", "300", "-o", out, "-q"],
                 ["eval", out, "--data", sys.argv[4], "-T", "2", "--json", out + ".eval.json"]):
        code = main(args, standalone_mode=False)
        if code:
            sys.exit(code)
""")


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_two_gloo_processes_match_one(tmp_path):
    model, calib, test = DIGITS / "cnn.pt2", DIGITS / "train.npz", DIGITS / "test.npz"
    one, two = tmp_path / "one", tmp_path / "two"
    runner = CliRunner()
    r = runner.invoke(main, ["compile", str(model), "--calib", str(calib), "--calib-samples", "300", "-o", str(one),
                             "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["eval", str(one), "--data", str(test), "-T", "2", "--json", f"{one}.eval.json"])
    assert r.exit_code == 0, r.output
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--standalone", str(script), str(two), str(calib), str(model), str(test)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _files(one) == _files(two)  # byte for byte: graph, parameters, report
    a = json.loads(Path(f"{one}.eval.json").read_text())
    b = json.loads(Path(f"{two}.eval.json").read_text())
    assert a == b
    assert a["samples"] == 360 and 0.5 < a["results"][0]["accuracy"] <= 1.0
    assert proc.stdout.count("snnc eval") == 1  # rank 0 alone prints


def test_batches_are_dealt_round_robin(monkeypatch):
    x = np.arange(10)
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    seen = []
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        seen += [(i, list(xb)) for i, xb, _ in distributed.my_batches(x, None, 3)]
    assert sorted(seen) == [(0, [0, 1, 2]), (1, [3, 4, 5]), (2, [6, 7, 8]), (3, [9])]


def test_outside_torchrun_nothing_is_distributed():
    assert not distributed.active() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.gather_rows({1: "b", 0: "a"}) == ["a", "b"]
    with pytest.raises(TypeError, match="integers only"):
        distributed.all_sum(np.array([0.5]))

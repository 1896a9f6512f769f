"""torch.distributed (issue 13): two gloo processes on the CPU, started by torchrun, compile a
byte-identical artifact and evaluate to the same figures as one process; d2e-finetune trains with
DistributedDataParallel, every rank ending with the same parameters, close to one process's."""

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

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIGITS = EXAMPLES / "digits"
MODEL, CALIB, TEST = DIGITS / "cnn.pt2", DIGITS / "train.npz", DIGITS / "test.npz"
# a direct-coded SNN, fine-tuned for one epoch; 257 samples: the last batch has one row, so rank 1
# runs its weight-0 placeholder row
SNN = ["compile", str(EXAMPLES / "direct_snn" / "snntorch_mlp_t4.pt"), "--arch",
       f"{EXAMPLES / 'direct_snn' / 'models.py'}:snntorch_mlp", "--input-shape", "1,8,8", "-T", "4",
       "--calib", str(CALIB), "--calib-samples", "257", "-q"]
FINETUNE = "canonicalize,d2e-encode,d2e-finetune{epochs=1}"

# each rank compiles, evaluates, then compiles with fine-tuning (a user pass dumps the rank's
# parameters before and after it): one launch, one interpreter start per rank
RANK_SCRIPT = textwrap.dedent("""
    import json
    import sys
    import numpy as np
    import snnc
    from snnc import distributed
    from snnc.cli import main

    from snnc.backends.torch.simulator import TorchSimulator

    out, tuned, model, calib, test = sys.argv[1:6]
    snn = json.loads(sys.argv[6])
    calls = []
    simulated = []  # the rows of each SNN simulation this rank runs during the first compile
    real_run_snn = TorchSimulator.run_snn

    def run_snn(self, graph, x, timesteps, record=()):
        simulated.append(len(x))
        return real_run_snn(self, graph, x, timesteps, record)

    TorchSimulator.run_snn = run_snn

    @snnc.register_pass("dump-params")
    def dump_params(ctx, graph):
        calls.append(graph.name)
        np.savez(f"{tuned}.rank{distributed.rank()}.{len(calls)}.npz",
                 **{k: np.asarray(v) for k, v in graph.params.items()})

    for args in (["compile", model, "--calib", calib, "--calib-samples", "300", "-o", out, "-q"],
                 ["eval", out, "--data", test, "-T", "2", "--json", out + ".eval.json"],
                 snn + ["-o", tuned, "-p", "canonicalize,d2e-encode,dump-params,d2e-finetune{epochs=1},dump-params"]):
        code = main(args, standalone_mode=False)
        if code:
            sys.exit(code)
        if args[0] == "compile" and args[1] == model:
            with open(f"{out}.rank{distributed.rank()}.simulated.json", "w") as f:
                json.dump(simulated, f)
""")


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One torchrun launch of two gloo processes running RANK_SCRIPT in a fresh directory."""
    where = tmp_path_factory.mktemp("torchrun")
    script = where / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                           str(script), str(where / "two"), str(where / "tuned"), str(MODEL), str(CALIB), str(TEST),
                           json.dumps(SNN)], capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return where, proc


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_two_gloo_processes_match_one(tmp_path, launched):
    where, proc = launched
    one, two = tmp_path / "one", where / "two"
    runner = CliRunner()
    r = runner.invoke(main, ["compile", str(MODEL), "--calib", str(CALIB), "--calib-samples", "300", "-o", str(one),
                             "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["eval", str(one), "--data", str(TEST), "-T", "2", "--json", f"{one}.eval.json"])
    assert r.exit_code == 0, r.output
    assert _files(one) == _files(two)  # byte for byte: graph, parameters, report
    a = json.loads(Path(f"{one}.eval.json").read_text())
    b = json.loads(Path(f"{two}.eval.json").read_text())
    assert a == b
    assert a["samples"] == 360 and 0.5 < a["results"][0]["accuracy"] <= 1.0
    assert proc.stdout.count("snnc eval") == 1  # rank 0 alone prints
    # the report's one simulation (256 samples, the default) is shared: each rank ran half of its units
    shares = [json.loads(Path(f"{two}.rank{r}.simulated.json").read_text()) for r in (0, 1)]
    assert sum(shares[0]) == sum(shares[1]) == 128, shares


def test_d2e_finetune_on_two_gloo_processes(tmp_path, launched):
    """DDP: both ranks end with the same parameters, rank 0 alone writes them, and they are the
    one-process result up to float rounding (a hundredth of what the epoch changed; measured: 1e-4)."""
    from safetensors.numpy import load_file

    where, _ = launched
    one, two = tmp_path / "one", where / "tuned"
    r = CliRunner().invoke(main, [*SNN, "-o", str(one), "-p", FINETUNE])
    assert r.exit_code == 0, r.output
    start, rank0, rank1 = (_arrays(where / f"tuned.rank{name}.npz") for name in ("0.1", "0.2", "1.2"))
    alone = load_file(str(one / "params.safetensors"))
    assert set(rank0) == set(rank1) == set(alone) and "fc1.weight" in rank0
    for k in rank0:
        np.testing.assert_array_equal(rank0[k], rank1[k])  # DDP keeps the ranks in step, bit for bit
        moved = np.abs(alone[k] - start[k]).max()
        assert moved > 1e-3, k  # the epoch trained this tensor
        assert np.abs(rank0[k] - alone[k]).max() <= 0.01 * moved, k
    written = load_file(str(two / "params.safetensors"))
    assert set(written) == set(rank0) and all(np.array_equal(written[k], rank0[k]) for k in rank0)
    # one artifact each, no temporary directory left behind by either rank
    assert sorted(p.name for p in where.iterdir() if p.is_dir()) == ["tuned", "two"]
    history = [json.loads((d / "report.json").read_text())["passes"]["d2e-finetune"]["history"] for d in (one, two)]
    assert [h["epoch"] for h in history[1]] == [1]
    assert history[1][0]["loss"] == pytest.approx(history[0][0]["loss"], rel=1e-3)


def test_each_rank_takes_a_contiguous_share_of_a_batch(monkeypatch):
    rows = np.arange(5)
    assert distributed.my_share(rows) is rows  # one process: the whole batch
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    shares = []
    for r in range(2):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shares.append(list(distributed.my_share(rows)))
    assert shares == [[0, 1, 2], [3, 4]]
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    monkeypatch.setattr(distributed, "rank", lambda: 2)
    assert list(distributed.my_share(np.arange(1))) == []  # rank 2 of 3 has nothing of a 1-row batch


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

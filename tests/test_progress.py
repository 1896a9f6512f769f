"""Progress on a log (issue 13): a status line every interval while a step runs, a closing line,
JSON lines with --diagnostics-format json, nothing with --quiet or for a short step."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from snnc.progress import progress_factory


def _run(interval: float, seconds: float, **kw) -> str:
    stream = io.StringIO()
    with progress_factory(stream=stream, interval=interval, **kw) as factory:
        if factory is None:
            return stream.getvalue()
        with factory("calibrate", 4) as bar:
            for _ in range(4):
                time.sleep(seconds / 4)
                bar.advance()
    return stream.getvalue()


def test_status_lines_while_a_step_runs():
    lines = _run(0.05, 0.6).splitlines()
    assert len(lines) >= 3
    assert lines[0].startswith("snnc: calibrate: ") and "/4 (" in lines[0]
    assert lines[-1].startswith("snnc: calibrate: done, 4/4 in ")


def test_short_step_prints_nothing_and_quiet_never():
    assert _run(5.0, 0.01) == ""
    assert _run(0.05, 0.3, quiet=True) == ""


def test_json_lines():
    lines = _run(0.05, 0.4, json_lines=True).splitlines()
    records = [json.loads(line) for line in lines]
    assert records and all(r["severity"] == "progress" and r["step"] == "calibrate" for r in records)
    assert records[-1]["final"] is True and records[-1]["done"] == 4


def test_a_one_call_step_waits_four_intervals():
    stream = io.StringIO()
    with progress_factory(stream=stream, interval=0.05) as factory:
        with factory("load model", 1) as bar:
            time.sleep(0.12)
            bar.advance()
    assert stream.getvalue() == ""


class _Recorder:
    """A progress factory that records each step's description, total and advances."""

    def __init__(self) -> None:
        self.steps: list[list] = []

    def __call__(self, description: str, total: int):
        step = [description, total, 0]
        self.steps.append(step)

        class _Bar:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def advance(self, n: int = 1) -> None:
                step[2] += n

        return _Bar()


def test_snnc_run_advances_by_pieces_with_the_same_results(tmp_path):
    """`snnc run` shows progress: the samples go in pieces of at most RUN_BATCH (a bar step each), and
    the logits are those of one call."""
    import numpy as np

    from snnc.driver import CompileOptions, compile_model
    from snnc.runner import RUN_BATCH, open_artifact, run_artifact

    digits = Path(__file__).resolve().parent.parent / "examples" / "digits"
    compile_model(CompileOptions(model=digits / "mlp.pt2", calib=digits / "train.npz", out=tmp_path / "a",
                                 pipeline="ann-to-snn", calib_samples=100, report_samples=8, timesteps=2))
    art = open_artifact(tmp_path / "a")
    with np.load(digits / "test.npz") as f:
        x = f["x"]
    assert len(x) > RUN_BATCH  # 360: two pieces of 180
    whole = run_artifact(art, x, None, "snn", None)
    recorder = _Recorder()
    pieces = run_artifact(art, x, None, "snn", None, progress=recorder)
    assert recorder.steps == [["run (torch, T=2)", 2, 2]]
    np.testing.assert_array_equal(pieces["logits"], whole["logits"])
    np.testing.assert_array_equal(pieces["predictions"], whole["predictions"])

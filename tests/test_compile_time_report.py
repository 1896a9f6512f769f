"""One SNN simulation per compile, on the report's sample (issue 13).

The pipeline's last count-ops leaves its simulation to the report unless the user sets its
``samples``; the report's one simulation of ``--report-samples`` then gives count-ops' SOPs and
spikes (graph.analyses, which a target reads) and the accuracy.  The numbers are those that
count-ops on the same sample gives when it simulates itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from snnc.backends.torch.simulator import TorchSimulator
from snnc.driver import CompileOptions, compile_model
from snnc.passes.count_ops import OpCounts

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"


@pytest.fixture
def calls(monkeypatch) -> list[int]:
    seen: list[int] = []
    real = TorchSimulator.run_snn

    def counting(self, graph, x, timesteps, record=()):
        seen.append(len(x))
        return real(self, graph, x, timesteps, record)

    monkeypatch.setattr(TorchSimulator, "run_snn", counting)
    return seen


def _compile(tmp_path: Path, name: str, **kw):
    return compile_model(CompileOptions(model=DIGITS / "cnn.pt2", calib=DIGITS / "train.npz", out=tmp_path / name,
                                        calib_samples=300, timesteps=4, **kw))


def test_report_samples_alone_simulates_once(tmp_path, calls):
    result = _compile(tmp_path, "o", report_samples=40)
    assert calls == [40]
    counts = result.graph.analyses.get(OpCounts)
    assert counts is not None and counts.simulated  # what a target (tvm's densities) reads
    assert result.report["totals"]["sops"] > 0 and result.report["accuracy"]["samples"] == 40
    assert "count-ops" in result.report["pipeline"]  # the pipeline as the user asked for it


def test_deferred_counts_equal_count_ops_own_simulation(tmp_path, calls):
    """Left to the report or run by count-ops itself on the same sample: the same report."""
    deferred = _compile(tmp_path, "a", report_samples=40).report
    explicit = _compile(tmp_path, "b", report_samples=40, pass_options=["count-ops.samples=40"]).report
    assert calls == [40, 40]  # each compile simulated once: the second reused count-ops' run
    for key in ("layers", "totals", "energy_pj", "accuracy"):
        assert deferred[key] == explicit[key], key


def test_samples_set_by_the_user_are_kept(tmp_path, calls):
    _compile(tmp_path, "a", report_samples=40, pass_options=["count-ops.samples=25"])
    assert calls == [25, 40]  # count-ops as asked, then the report's own sample
    calls.clear()
    pipeline = ("canonicalize,fold-bn,calibrate,lower-neurons,fold-thresholds,encode-input{scheme=direct},"
                "count-ops{samples=30}")
    result = _compile(tmp_path, "b", report_samples=40, pipeline=pipeline)
    assert calls == [30, 40]
    assert "count-ops{samples=30}" in result.report["pipeline"]


def test_count_ops_without_samples_simulates_nothing(tmp_path, calls):
    """count-ops{samples=0} on its own: MACs and neurons, no simulation (the report still simulates)."""
    pipeline = "canonicalize,fold-bn,calibrate,lower-neurons,fold-thresholds,count-ops{samples=0},canonicalize"
    result = _compile(tmp_path, "o", report_samples=20, pipeline=pipeline)
    assert calls == [20]  # not deferred (a transform follows it): only the report's simulation
    assert result.graph.analyses.get(OpCounts) is None or not result.graph.analyses.get(OpCounts).simulated
    assert result.report["totals"]["sops"] > 0

"""report.json says in which order the reference simulator ran the compile's one simulation
(``simulation.execution``, schema 4): layer-major for a converted feed-forward SNN, time-major with
the reason where the order of the steps matters (an early-exit readout)."""

from __future__ import annotations

from pathlib import Path

from snnc.driver import CompileOptions, compile_model
from snnc.report import SCHEMA_VERSION

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"


def _compile(tmp_path: Path, pipeline: str | None = None):
    return compile_model(CompileOptions(model=DIGITS / "cnn.pt2", calib=DIGITS / "train.npz", out=tmp_path / "o",
                                        calib_samples=200, timesteps=4, report_samples=32, pipeline=pipeline))


def test_a_converted_cnn_is_simulated_layer_major(tmp_path) -> None:
    report = _compile(tmp_path).report
    assert report["schema_version"] == SCHEMA_VERSION == 4
    assert report["simulation"] == {"execution": "layer-major"}
    assert report["totals"]["sops"] > 0


def test_an_early_exit_readout_is_simulated_time_major_and_the_report_says_why(tmp_path) -> None:
    report = _compile(tmp_path, "ann-to-snn,adaptive-timesteps,count-ops").report
    execution = report["simulation"]["execution"]
    assert execution.startswith("time-major (readout %") and execution.endswith("has an early-exit rule)")

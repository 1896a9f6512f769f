"""The compile report on a bounded, seeded sample (issue 13): one SNN simulation for count-ops and
the report together; --report-samples and --calib-samples choose the samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from snnc.backends.torch.simulator import TorchSimulator
from snnc.distributed import UNIT
from snnc.driver import CompileOptions, compile_model
from snnc.errors import UserError

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"


def test_one_simulation_for_counts_and_accuracy(tmp_path, monkeypatch):
    calls: list[int] = []
    real = TorchSimulator.run_snn

    def counting(self, graph, x, timesteps, record=()):
        calls.append(len(x))
        return real(self, graph, x, timesteps, record)

    monkeypatch.setattr(TorchSimulator, "run_snn", counting)
    result = compile_model(CompileOptions(model=DIGITS / "cnn.pt2", calib=DIGITS / "train.npz", out=tmp_path / "o",
                                          calib_samples=500, timesteps=4))
    # count-ops' simulation, reused by the report: the 256 samples once, in units (snnc.distributed.map_units)
    assert calls == [UNIT] * (256 // UNIT)
    accuracy = result.report["accuracy"]
    assert accuracy["samples"] == 256 and accuracy["split"] == "calibration"
    assert result.report["passes"]["calibrate"]["samples"] == 500
    assert 0.5 < accuracy["converted"] <= 1.0


def test_test_data_sample_is_the_one_simulation(tmp_path, monkeypatch):
    calls: list[int] = []
    real = TorchSimulator.run_snn

    def counting(self, graph, x, timesteps, record=()):
        calls.append(len(x))
        return real(self, graph, x, timesteps, record)

    monkeypatch.setattr(TorchSimulator, "run_snn", counting)
    result = compile_model(CompileOptions(model=DIGITS / "cnn.pt2", calib=DIGITS / "train.npz", out=tmp_path / "o",
                                          test_data=DIGITS / "test.npz", calib_samples=200, report_samples=50,
                                          timesteps=4))
    assert calls == [50]  # one simulation, of the test sample: its counts are count-ops's too
    assert result.report["accuracy"]["samples"] == 50 and result.report["accuracy"]["split"] == "test"


def test_sample_options_are_checked(tmp_path):
    with pytest.raises(UserError, match="--report-samples 0: must be >= 1"):
        compile_model(CompileOptions(model=DIGITS / "cnn.pt2", out=tmp_path / "o", report_samples=0))
    with pytest.raises(UserError, match="--calib-samples 0: must be >= 1"):
        compile_model(CompileOptions(model=DIGITS / "cnn.pt2", calib=DIGITS / "train.npz", out=tmp_path / "o",
                                     calib_samples=0))

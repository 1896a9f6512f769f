"""The named direct-to-event pipeline: registered, the default for spiking sources, and end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conversion_util import SIM, digits_split, run
from d2e_util import accuracy, digits_context, trained_mlp

from snnc.cli import main
from snnc.driver import default_pipeline
from snnc.energy import energy_pj
from snnc.ir import verify
from snnc.pass_manager import CalibrationData, available_pipelines, parse_pipeline, pipeline_string

REPO = Path(__file__).resolve().parent.parent
DIRECT_SNN = REPO / "examples" / "direct_snn"


def _energy(graph, x, timesteps) -> float:
    r = SIM.run_snn(graph, x, timesteps)
    return energy_pj(sum(r.macs.values()), sum(r.sops.values()))["45nm"]


def test_registered_and_default_for_spiking_sources() -> None:
    pipelines = available_pipelines()
    assert {"direct-to-event", "direct-to-event-unlabelled"} <= set(pipelines)
    names = [p.name for p in parse_pipeline("direct-to-event")]
    assert names == ["canonicalize", "fold-bn", "d2e-encode", "d2e-calibrate", "d2e-finetune", "count-ops"]
    assert parse_pipeline(pipeline_string(parse_pipeline("direct-to-event"))) == parse_pipeline(
        "direct-to-event"
    )
    x = np.zeros((2, 64), np.float32)
    assert default_pipeline(trained_mlp(4), CalibrationData(x, np.zeros(2, np.int64))) == "direct-to-event"
    assert default_pipeline(trained_mlp(4), CalibrationData(x)) == "direct-to-event-unlabelled"
    assert default_pipeline(trained_mlp(4), None) == "canonicalize,count-ops"


def test_end_to_end_on_a_trained_direct_coded_mlp() -> None:
    """Event-based, no multiply left, >= 5x less energy (45 nm), accuracy near the direct-coded source."""
    T = 4
    source = trained_mlp(T)
    ctx = digits_context(T, n=480)  # a third of the training split keeps the 30 epochs short
    out = run("direct-to-event", source, ctx)
    verify(out, require_event=True)
    x, _ = digits_split("test")
    run_out = SIM.run_snn(out, x, T)
    assert sum(run_out.macs.values()) == 0
    assert _energy(source, x, T) >= 5 * _energy(out, x, T)
    assert accuracy(out) >= accuracy(source, timesteps=T) - 0.02
    counted = ctx.results["count-ops"]["totals"]
    assert counted["analog_macs"] == 0 and counted["sops"] > 0


def test_unlabelled_variant_needs_no_labels() -> None:
    T = 4
    out = run("direct-to-event-unlabelled", trained_mlp(T), digits_context(T, labelled=False, n=256))
    verify(out, require_event=True)
    assert accuracy(out) >= accuracy(trained_mlp(T), timesteps=T) - 0.03


def _compile_snntorch_mlp(tmp_path: Path, *extra: str) -> dict:
    pytest.importorskip("snntorch")
    ckpt = DIRECT_SNN / "snntorch_mlp_t4.pt"
    if not ckpt.exists():
        pytest.skip("examples/direct_snn has no snntorch_mlp_t4.pt")
    out = tmp_path / "art"
    digits = REPO / "examples" / "digits"
    args = [
        "compile",
        str(ckpt),
        "--arch",
        f"{DIRECT_SNN / 'models.py'}:snntorch_mlp",
        "--input-shape",
        "1,8,8",
        "--calib",
        str(digits / "train.npz"),
        "--test-data",
        str(digits / "test.npz"),
        "--timesteps",
        "4",
        "-o",
        str(out),
        *extra,
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["totals"]["analog_macs"] == 0 and report["totals"]["sops"] > 0
    assert np.isfinite(report["energy_pj"]["45nm"])
    return report


def test_snnc_compile_runs_d2e_passes_on_an_imported_snntorch_model(tmp_path) -> None:
    """``snnc compile ckpt.pt --arch models.py:factory --calib train.npz`` with a short d2e pipeline."""
    short = "canonicalize,d2e-encode,d2e-calibrate{samples=128},d2e-finetune{epochs=1},count-ops"
    report = _compile_snntorch_mlp(tmp_path, "--pipeline", short)
    assert report["accuracy"]["converted"] > 0.9
    assert set(report["passes"]) >= {"d2e-encode", "d2e-calibrate", "d2e-finetune"}


@pytest.mark.slow
def test_snnc_compile_default_pipeline_on_an_imported_snntorch_model(tmp_path) -> None:
    report = _compile_snntorch_mlp(tmp_path)
    assert report["pipeline"].startswith("canonicalize,fold-bn,d2e-encode")
    assert report["accuracy"]["converted"] > 0.95

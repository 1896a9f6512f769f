"""Every named pipeline (snnc/passes/pipelines.py, snnc/passes/d2e_pipelines.py, snnc.backends.loihi.passes.loihi_pipelines.py)
names only registered passes with valid options, and prints back to itself."""

from __future__ import annotations

import importlib

import pytest

from snnc.pass_manager import PIPELINES, available_pipelines, parse_pipeline, pipeline_string

MODULES = {
    "snnc.passes.pipelines": {"ann-to-snn", "ann-to-snn-corrected", "ann-to-snn-unsigned", "ann-to-snn-fast",
                              "ann-to-snn-phase", "ann-to-nir", "snn-to-nir"},
    "snnc.passes.d2e_pipelines": {"direct-to-event", "direct-to-event-unlabelled"},
    "snnc.backends.loihi.passes.loihi_pipelines": {"ann-to-loihi"},
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_pipeline_module_registers_its_pipelines(module: str) -> None:
    importlib.import_module(module)
    assert MODULES[module] <= set(PIPELINES), f"{module} registers {sorted(PIPELINES)}"


@pytest.mark.parametrize("name", sorted(set().union(*MODULES.values())))
def test_named_pipeline_parses_and_prints_back(name: str) -> None:
    passes = parse_pipeline(available_pipelines()[name])  # unknown pass or option would raise
    assert passes, name
    assert parse_pipeline(pipeline_string(passes)) == passes

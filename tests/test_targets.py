"""The target registry describes each target once, and every target implements the whole protocol,
``run`` included (``snnc run --backend`` goes through it; nothing dispatches on target names)."""

from __future__ import annotations

import importlib
import inspect
import json

import numpy as np
import pytest
from conversion_util import graph_from_text

from snnc.errors import UserError
from snnc.ir import save_graph
from snnc.runner import open_artifact, run_artifact
from snnc.targets import TARGETS, Target, get_target

PROTOCOL = [name for name, _ in inspect.getmembers(Target, inspect.isfunction) if not name.startswith("_")]


def test_the_protocol_has_run():
    assert {"pipeline_suffix", "legality", "compile", "run"} <= set(PROTOCOL)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_implements_the_protocol_and_carries_no_second_description(name):
    entry = TARGETS[name]
    assert entry.name == name and entry.description
    cls = getattr(importlib.import_module(entry.module), entry.cls)
    missing = [m for m in PROTOCOL if not callable(getattr(cls, m, None))]
    assert missing == []
    assert not hasattr(cls, "description")  # the registry is the one description


def test_an_unknown_backend_is_named_with_a_suggestion():
    with pytest.raises(UserError, match=r"unknown target 'tvn'; did you mean 'tvm'\?"):
        get_target("tvn")


def test_nir_artifacts_say_how_to_run_them(tmp_path):
    graph = graph_from_text("""
    graph @g(%x: analog[4]) attributes {timesteps = 4} {
      %l = linear(%x) params {weight = "w"} : analog[3]
      %n = neuron(%l) {strict = true, reset = "hard"} : spike[3]
      %readout = readout(%n) : analog[3]
      output %readout
    }
    """)
    save_graph(graph, tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"target": "nir"}))
    art = open_artifact(tmp_path)
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(UserError, match="no model.nir to run; compile with --target nir, or run the artifact's IR "
                                        "with --backend torch"):
        run_artifact(art, x, None, "snn", None)
    torch_run = run_artifact(art, x, None, "snn", "torch")
    assert torch_run["logits"].shape == (2, 3)
    # with its file, a nir artifact runs model.nir in Norse (tests/test_nir_interop.py compares them)
    pytest.importorskip("norse")
    import nir

    from snnc.formats.nir import to_nir

    art.graph.params = {"w": np.eye(3, 4, dtype=np.float32) * 2}
    save_graph(art.graph, tmp_path)
    nir.write(str(tmp_path / "model.nir"), to_nir(art.graph))
    x = np.random.default_rng(0).uniform(0, 1, (5, 4)).astype(np.float32)
    ours = run_artifact(open_artifact(tmp_path), x, None, "snn", "torch")
    theirs = run_artifact(open_artifact(tmp_path), x, None, "snn", None)
    np.testing.assert_array_equal(theirs["logits"], ours["logits"])
    assert ours["logits"].sum() > 0


@pytest.mark.parametrize(
    ("target", "body", "message"),
    [
        # (tvm refuses nothing at import any more: grouped convolution, conv1d, concat and ceil_mode
        # pooling all lower; tests/test_tvm_coverage.py)
        ("loihi", 'conv1d(%x) params {weight = "w1"} : analog[4,4]',
         "conv1d %c: Loihi has dense and 2-D convolutional synapses only"),
    ],
)
def test_what_no_pass_can_change_is_refused_before_the_data_is_read(tmp_path, target, body, message):
    """The calibration file is garbage: a refusal that names the op proves the target looked at the
    imported graph before reading any data (and so before calibration)."""
    from click.testing import CliRunner

    from snnc.cli import main

    shape = "2,4,4" if "conv2d" in body else "2,4"
    graph = graph_from_text(f"""
    graph @g(%x: analog[{shape}]) {{
      %c = {body}
      %r = relu(%c) : {body.rsplit(": ", 1)[1]}
      output %r
    }}
    """, params={"w": np.ones((4, 1, 3, 3)) * 0.1, "w1": np.ones((4, 2, 1)) * 0.1})
    save_graph(graph, tmp_path / "model")
    garbage = tmp_path / "calib.npz"
    garbage.write_bytes(b"not a zip file")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(tmp_path / "model" / "graph.snnir"), "--target", target,
                                       "--calib", str(garbage), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert f"target '{target}' cannot compile this model (found before any pass ran): {message}" in result.stderr
    assert not out.exists()

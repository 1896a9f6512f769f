"""run_lava.py, the script a Loihi artifact carries to run its network.net in Lava: written, valid Python,
and configured as snnc compiled (reset_offset, input layout, coding, readout, the netx blocks).  Lava
itself needs Python 3.10 and is not installed here; `make interop-lava` runs the scripts in Lava."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from snnc.backends.loihi.bitacc import LayerKind, LifParams, QLayer
from snnc.backends.loihi.lava_script import SCRIPT_FILE, lava_config, render_script
from snnc.backends.loihi.lower import InputCoding, LoihiNet, Readout, ReadoutKind
from snnc.backends.loihi.target import encode_input
from snnc.cli import main
from snnc.errors import UnsupportedError
from snnc.ir import ops as O

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """The digits CNN and MLP compiled for loihi on 64 calibration samples (enough for the layout)."""
    root = tmp_path_factory.mktemp("lava")
    with np.load(DIGITS / "train.npz") as f:
        np.savez(root / "calib.npz", x=f["x"][:64], y=f["y"][:64])
    out = {}
    for model in ("cnn", "mlp"):
        out[model] = root / model
        result = CliRunner().invoke(main, ["compile", str(DIGITS / f"{model}.pt2"), "--calib", str(root / "calib.npz"),
                                           "--target", "loihi", "-o", str(out[model])])
        assert result.exit_code == 0, result.stderr
    return out


def _config(path: Path) -> dict:
    """The script's module-level constants, read statically (nothing of it runs)."""
    tree = ast.parse(path.read_text())
    values = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id.isupper() and getattr(node, "value", None) is not None:
            try:
                values[target.id] = ast.literal_eval(node.value)  # type: ignore[arg-type]
            except ValueError:
                pass
    return values


def _load(path: Path) -> ModuleType:
    """The script as a module: at import it needs numpy only (Lava is imported when it runs)."""
    spec = importlib.util.spec_from_file_location(f"run_lava_{path.parent.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_script_is_written_and_is_python(artifacts: dict[str, Path], model: str) -> None:
    script = artifacts[model] / SCRIPT_FILE
    report = json.loads((artifacts[model] / "report.json").read_text())["target_report"]
    assert report["files"]["lava_script"] == SCRIPT_FILE and report["files"]["netx"] == "network.net"
    compile(script.read_text(), str(script), "exec")
    text = script.read_text()
    # it loads the file with the configured offset and interval, on Lava's fixed-point CPU simulation
    assert "reset_offset=RESET_OFFSET" in text and "reset_interval=STEPS_PER_SAMPLE" in text
    assert 'Loihi2SimCfg(select_tag="fixed_pt")' in text
    imports = {alias.name.split(".")[0] for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Import)
               for alias in node.names}
    imports |= {node.module.split(".")[0] for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.ImportFrom) and node.module}
    assert imports <= {"__future__", "argparse", "sys", "pathlib", "typing", "numpy", "lava"}, imports


@pytest.mark.parametrize(("model", "layout", "blocks"), [
    ("cnn", "whc", ["conv", "conv", "conv", "dense"]),
    ("mlp", "flat-chw", ["dense", "dense", "dense"]),
])
def test_script_configuration_is_what_snnc_compiled(artifacts: dict[str, Path], model: str, layout: str,
                                                    blocks: list[str]) -> None:
    out = artifacts[model]
    cfg = _config(out / SCRIPT_FILE)
    mapping = json.loads((out / "mapping.json").read_text())
    report = json.loads((out / "report.json").read_text())["target_report"]
    # netx resets block k at reset_offset + 1 + k; snnc resets the layer at depth k + 1 there
    assert cfg["RESET_OFFSET"] == 1
    assert cfg["INPUT_LAYOUT"] == layout and cfg["INPUT_SHAPE"] == (1, 8, 8)
    assert cfg["TIMESTEPS"] == mapping["timesteps"] == 8
    assert cfg["STEPS_PER_SAMPLE"] == mapping["steps_per_inference"] == report["steps_per_inference"]
    assert cfg["INPUT_SCHEME"] == "direct" == mapping["input"]["scheme"]
    assert cfg["INPUT_LEVELS"] == mapping["input"]["levels"] and cfg["INPUT_MESSAGE_BITS"] == 8
    assert cfg["READOUT"] == "voltage" and cfg["READOUT_SCALE"] == report["readout_scale"]
    # one block per netx layer that Lava builds, in order, each at depth k + 1 (what the offset assumes)
    with h5py.File(out / "network.net", "r") as f:
        kinds = [f["layer"][k]["type"][0].decode() for k in sorted(f["layer"], key=int)]
    assert [k for k in kinds if k not in ("input", "flatten")] == [kind for _, kind, _ in cfg["BLOCKS"]] == blocks
    depth = {layer["name"]: layer["depth"] for layer in mapping["layers"]}
    assert [depth[name] for name, _, _ in cfg["BLOCKS"]] == list(range(1, len(blocks) + 1))
    assert cfg["STEPS_PER_SAMPLE"] == cfg["TIMESTEPS"] + len(blocks)


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_script_sends_what_snnc_encodes_in_netx_layout(artifacts: dict[str, Path], model: str) -> None:
    script = _load(artifacts[model] / SCRIPT_FILE)
    with np.load(DIGITS / "test.npz") as f:
        x = np.asarray(f["x"][:16], dtype=np.float32)
    coding = InputCoding(scheme=O.Scheme.DIRECT, levels=script.INPUT_LEVELS, message_bits=script.INPUT_MESSAGE_BITS)
    ours = encode_input(coding, x, script.TIMESTEPS)
    sent = script.encode(x)
    assert sent.shape == (16, script.STEPS_PER_SAMPLE, 1, 8, 8)
    assert np.array_equal(sent[:, : script.TIMESTEPS], ours) and not sent[:, script.TIMESTEPS :].any()
    lava = script.to_lava(sent[:, 0])
    if model == "cnn":  # netx's conv port is (x, y, c) = (W, H, C): pixel (h, w) sits at [w, h]
        assert lava.shape == (16, 8, 8, 1) and np.array_equal(lava[:, 2, 5, 0], sent[:, 0, 0, 5, 2])
        assert np.array_equal(script.from_lava(lava, (1, 8, 8)), sent[:, 0])
    else:  # the first dense's weights take PyTorch's C, H, W flattening
        assert lava.shape == (16, 64) and np.array_equal(lava[:, 5 * 8 + 2], sent[:, 0, 0, 5, 2])


def test_render_refuses_a_configuration_that_does_not_match_the_template() -> None:
    with pytest.raises(ValueError, match="do not match"):
        render_script({"NETX_FILE": "network.net"})


def test_no_script_when_the_readout_is_not_the_last_block() -> None:
    lif = LifParams(du=4095, dv=0, vth_mant=100)
    layers = [QLayer(name="in", kind=LayerKind.INPUT, shape=(4,)),
              QLayer(name="a", kind=LayerKind.DENSE, shape=(3,), weight=np.full((3, 4), 2), lif=lif),
              QLayer(name="b", kind=LayerKind.DENSE, shape=(2,), weight=np.full((2, 3), 2), lif=lif)]
    coding = InputCoding(scheme=O.Scheme.DIRECT, levels=4.0, message_bits=8)
    net = LoihiNet(layers=layers, coding=coding, readout=Readout(ReadoutKind.VOLTAGE, 1))
    with pytest.raises(UnsupportedError, match="readout 'a' is not the last netx block"):
        lava_config(net, 4)
    cfg = lava_config(LoihiNet(layers=layers, coding=coding, readout=Readout(ReadoutKind.VOLTAGE, 2)), 4)
    assert cfg["STEPS_PER_SAMPLE"] == 6 and cfg["BLOCKS"] == [("a", "dense", (3,)), ("b", "dense", (2,))]
    assert cfg["INPUT_LAYOUT"] == "flat-chw"


def test_ttfs_script_encodes_as_snnc(tmp_path: Path) -> None:
    """A TTFS-coded artifact's script makes snnc's spike times in numpy (rate coding needs torch's
    generator: the script asks for --spikes)."""
    layers = [QLayer(name="in", kind=LayerKind.INPUT, shape=(2, 3, 3)),
              QLayer(name="f", kind=LayerKind.FLATTEN, shape=(18,)),
              QLayer(name="o", kind=LayerKind.DENSE, shape=(4,), weight=np.full((4, 18), 2),
                     lif=LifParams(du=4095, dv=0, vth_mant=100))]
    coding = InputCoding(scheme=O.Scheme.TTFS)
    config = lava_config(LoihiNet(layers=layers, coding=coding, readout=Readout(ReadoutKind.SPIKE_COUNT, 2)), 6)
    (tmp_path / SCRIPT_FILE).write_text(render_script(config))
    script = _load(tmp_path / SCRIPT_FILE)
    x = np.random.default_rng(0).random((32, 2, 3, 3)).astype(np.float32)
    x[0, 0, 0, 0], x[1, 1, 2, 2] = 0.0, 0.5  # no spike; a time of exactly 2.5 steps (rounds to even)
    sent = script.encode(x)
    assert sent.shape == (32, 7, 2, 3, 3) and not sent[:, 6:].any()
    assert np.array_equal(sent[:, :6] != 0, encode_input(coding, x, 6))
    assert script.to_lava(sent[:, 0]).shape == (32, 18)

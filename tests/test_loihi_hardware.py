"""Chip descriptions: the TOML data, its sources, loading and overrides."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from snnc.backends.loihi.hardware import TARGETS_DIR, CostModel, Resource, load_chip
from snnc.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_loihi1_values():
    c = load_chip("loihi1")
    assert c.cores_per_chip == 128
    assert c.core.neurons == 1024 and c.core.synapse_bits == 16384 * 64
    assert c.core.input_axons == c.core.output_axons == 4096
    assert (c.core.compartment_configs, c.core.threshold_configs, c.core.synapse_formats) == (32, 8, 8)
    assert (
        c.numbers.vth_mant_max == 131071 and c.numbers.bias_mant_max == 4095 and c.numbers.decay_max == 4095
    )
    assert c.energy(CostModel.DAVIES2018).synaptic_op == 23.6
    assert c.energy(CostModel.SANAFE).synaptic_op == 35.5
    assert c.time(CostModel.DAVIES2018).neuron_update_active == 8.4
    assert c.board_chips("kapoho-bay") == 2 and c.board_chips("nahuku") == 32
    assert c.board_chips("pohoiki_springs") == 768
    assert c.core.capacity(Resource.SYNAPSE_BITS) == 1048576


def test_loihi_is_loihi2():
    c = load_chip("loihi")
    assert c.name == "loihi2" and c == load_chip("loihi2")
    assert c.cores_per_chip == 120
    assert c.board_chips("oheo-gulch") == 1 and c.board_chips("kapoho-point") == 8
    assert c.board_chips("hala-point") == 1152


@pytest.mark.parametrize("name", ["loihi1", "loihi2"])
def test_every_value_names_its_source(name):
    text = (TARGETS_DIR / f"{name}.toml").read_text()
    for line in text.splitlines():
        if re.match(r"^\s*[A-Za-z_]+\s*=", line) and not line.startswith(("name", "description")):
            assert "#" in line, f"{name}.toml: no source comment on: {line}"
    if name == "loihi2":
        assert text.count("UNVERIFIED") >= 10


def test_partial_override(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text("[core]\nneurons = 2048\n[energy_pj.sanafe]\nsynaptic_op = 10\n[boards]\nmy-rig = 3\n")
    c = load_chip("loihi1", f)
    base = load_chip("loihi1")
    assert c.core.neurons == 2048 and c.core.synapse_bits == base.core.synapse_bits
    assert c.energy(CostModel.SANAFE).synaptic_op == 10.0
    assert c.energy(CostModel.DAVIES2018) == base.energy(CostModel.DAVIES2018)
    assert c.board_chips("my-rig") == 3 and c.board_chips("nahuku") == 32


def test_unknown_override_key_says_did_you_mean(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[core]\nneuron = 10\n")
    with pytest.raises(UserError, match=r"unknown key 'core.neuron'; did you mean 'neurons'\?"):
        load_chip("loihi2", f)
    f.write_text("[cores]\nneurons = 10\n")
    with pytest.raises(UserError, match="did you mean 'core'"):
        load_chip("loihi2", f)


def test_override_value_types_are_checked(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[core]\nneurons = "many"\n')
    with pytest.raises(UserError, match="core.neurons' must be an integer"):
        load_chip("loihi2", f)
    f.write_text("[core]\nneurons = 0\n")
    with pytest.raises(UserError, match=">= 1"):
        load_chip("loihi2", f)
    f.write_text("[core\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_chip("loihi2", f)


def test_full_spec_from_path_and_unknown_names(tmp_path):
    f = tmp_path / "copy.toml"
    f.write_text((TARGETS_DIR / "loihi1.toml").read_text().replace('name = "loihi1"', 'name = "mychip"'))
    assert load_chip(f).name == "mychip"
    with pytest.raises(UserError, match="did you mean 'loihi1'"):
        load_chip("loihi11")
    with pytest.raises(UserError, match="unknown board 'hala-pt'"):
        load_chip("loihi2").board_chips("hala-pt")
    with pytest.raises(UserError, match="does not exist"):
        load_chip(tmp_path / "none.toml")


def test_import_is_light():
    code = (
        "import sys; import snnc.backends.loihi, snnc.backends.loihi.hardware, snnc.backends.loihi.bitacc, "
        "snnc.backends.loihi.fixed_point, snnc.backends.loihi.mapping, snnc.backends.loihi.netx, snnc.backends.loihi.plots; "
        "bad = [m for m in ('h5py', 'matplotlib') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

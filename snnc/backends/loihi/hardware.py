"""Loihi chip descriptions as data.

A :class:`ChipSpec` is read from a TOML file under ``targets/`` (``loihi1.toml``, ``loihi2.toml``); every
value there carries its source in a comment.  A user file passed with ``--target-config FILE.toml``
overrides any subset of the keys; an unknown key is a :class:`~snnc.errors.UserError` with a
did-you-mean.  Nothing here computes anything: the mapping and the cost model read these numbers.
"""

from __future__ import annotations

import dataclasses
import enum
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snnc.errors import UserError, did_you_mean

TARGETS_DIR = Path(__file__).parent / "targets"
ALIASES = {"loihi": "loihi2"}


class Resource(enum.Enum):
    """A per-core resource that the mapping must keep within :class:`CoreLimits`."""

    NEURONS = "neurons"
    SYNAPSE_BITS = "synapse_bits"
    INPUT_AXONS = "input_axons"
    OUTPUT_AXONS = "output_axons"
    COMPARTMENT_CONFIGS = "compartment_configs"
    THRESHOLD_CONFIGS = "threshold_configs"
    SYNAPSE_FORMATS = "synapse_formats"


@dataclass(frozen=True, kw_only=True)
class Topology:
    """How cores sit on a chip: ``cores_per_tile`` cores share a router; routers form an X-Y mesh."""

    cores_per_chip: int
    cores_per_tile: int
    mesh_tiles_x: int
    mesh_tiles_y: int
    chip_hop_weight: float  # one chip-to-chip link, counted in tile hops


@dataclass(frozen=True, kw_only=True)
class CoreLimits:
    """Capacity of one neuromorphic core, one field per :class:`Resource`."""

    neurons: int
    synapse_bits: int
    input_axons: int
    output_axons: int
    compartment_configs: int
    threshold_configs: int
    synapse_formats: int

    def capacity(self, resource: Resource) -> int:
        return int(getattr(self, resource.value))


@dataclass(frozen=True, kw_only=True)
class SynapseEncoding:
    """Synaptic-memory packing (nengo-loihi ``SynapseConfig.bits_per_axon``).

    Each input axon owns a list of synapses, cut in groups of at most ``synapses_per_group``; a group
    costs ``header_bits`` plus its synapses' bits, rounded up to whole ``word_bits`` words.  A synapse
    costs weight bits + ``delay_bits`` (+ ``index_bits`` when the list is sparse).
    """

    word_bits: int
    header_bits: int
    synapses_per_group: int
    index_bits: int
    delay_bits: int
    allowed_weight_bits: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class NumberFormats:
    """Widths of the neuron and synapse numbers (lava ``PyLifModelBitAcc`` and Dense)."""

    weight_bits: int
    weight_exp_min: int
    weight_exp_max: int
    vth_mant_bits: int
    vth_shift: int
    decay_bits: int
    bias_mant_bits: int
    bias_exp_max: int
    state_bits: int
    act_shift: int
    refractory_max: int

    @property
    def vth_mant_max(self) -> int:
        return (1 << self.vth_mant_bits) - 1

    @property
    def bias_mant_max(self) -> int:
        return (1 << (self.bias_mant_bits - 1)) - 1

    @property
    def decay_max(self) -> int:
        return (1 << self.decay_bits) - 1


@dataclass(frozen=True, kw_only=True)
class OpCosts:
    """Cost of each operation, in pJ (energy tables) or ns (time tables)."""

    synaptic_op: float
    neuron_update_active: float
    neuron_update_inactive: float
    neuron_spike: float
    axon_out: float
    spike_within_tile: float
    hop_ew: float
    hop_ns: float
    barrier_sync: float


class CostModel(enum.Enum):
    """Which per-operation table to use: Davies et al. 2018 Table 2, or SANA-FE's silicon calibration."""

    DAVIES2018 = "davies2018"
    SANAFE = "sanafe"


@dataclass(frozen=True, kw_only=True)
class ChipSpec:
    """Everything snnc knows about one chip generation."""

    name: str
    description: str
    topology: Topology
    core: CoreLimits
    synapse: SynapseEncoding
    numbers: NumberFormats
    energy_pj: dict[str, OpCosts]
    time_ns: dict[str, OpCosts]
    boards: dict[str, int]

    # frozen + dict fields: hash by name (two specs with one name but other numbers are still unequal).
    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def cores_per_chip(self) -> int:
        return self.topology.cores_per_chip

    def energy(self, model: CostModel) -> OpCosts:
        return self.energy_pj[model.value]

    def time(self, model: CostModel) -> OpCosts:
        return self.time_ns[model.value]

    def board_chips(self, board: str) -> int:
        """Chips on ``board`` (``hala-point`` and ``hala_point`` both work); UserError if unknown."""
        key = board.strip().lower().replace("-", "_")
        if key not in self.boards:
            raise UserError(
                f"unknown board '{board}' for {self.name}{did_you_mean(key, self.boards)}; "
                f"known boards: {', '.join(sorted(self.boards))}"
            )
        return self.boards[key]


def _known_names() -> list[str]:
    return sorted([p.stem for p in TARGETS_DIR.glob("*.toml")] + list(ALIASES))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"target config '{path}' does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"target config '{path}' is not valid TOML: {e}") from None


def _merge(base: dict[str, Any], override: dict[str, Any], where: str, source: Path) -> None:
    """Deep-merge ``override`` into ``base`` in place; keys must already exist in ``base``."""
    for key, value in override.items():
        path = f"{where}.{key}" if where else key
        if key not in base:
            raise UserError(
                f"{source}: unknown key '{path}'{did_you_mean(key, base)}; "
                f"known keys here: {', '.join(sorted(base))}"
            )
        if isinstance(base[key], dict) and key != "boards":
            if not isinstance(value, dict):
                raise UserError(f"{source}: '{path}' must be a table, got {value!r}")
            _merge(base[key], value, path, source)
        elif key == "boards":
            # boards may be added as well as changed: a user describes their own system
            if not isinstance(value, dict):
                raise UserError(f"{source}: 'boards' must be a table of name = chips")
            base[key].update(value)
        else:
            base[key] = value


def _build(cls: type, data: dict[str, Any], where: str, source: str) -> Any:
    """Build dataclass ``cls`` from a TOML table, checking keys and value types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise UserError(f"{source}: unknown key '{where}.{key}'{did_you_mean(key, names)}")
    missing = [n for n in names if n not in data]
    if missing:
        raise UserError(f"{source}: table '{where}' is missing {', '.join(missing)}")
    kwargs = {}
    for name in names:
        value, hint = data[name], hints[name]
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"{source}: '{where}.{name}' must be an integer, got {value!r}")
        elif hint is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"{source}: '{where}.{name}' must be a number, got {value!r}")
            value = float(value)
        elif hint is str:
            if not isinstance(value, str):
                raise UserError(f"{source}: '{where}.{name}' must be a string, got {value!r}")
        elif typing.get_origin(hint) is tuple:
            if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
                raise UserError(f"{source}: '{where}.{name}' must be a list of integers, got {value!r}")
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _spec_from_dict(data: dict[str, Any], source: str) -> ChipSpec:
    top = {f.name for f in dataclasses.fields(ChipSpec)}
    for key in data:
        if key not in top:
            raise UserError(f"{source}: unknown key '{key}'{did_you_mean(key, top)}")
    missing = sorted(top - set(data))
    if missing:
        raise UserError(f"{source}: missing {', '.join(missing)}")

    def cost_tables(section: str) -> dict[str, OpCosts]:
        tables = data[section]
        known = [m.value for m in CostModel]
        for key in tables:
            if key not in known:
                raise UserError(f"{source}: unknown cost model '{section}.{key}'{did_you_mean(key, known)}")
        for key in known:
            if key not in tables:
                raise UserError(f"{source}: '{section}' is missing the '{key}' table")
        return {k: _build(OpCosts, v, f"{section}.{k}", source) for k, v in tables.items()}

    boards = data["boards"]
    for name, chips in boards.items():
        if isinstance(chips, bool) or not isinstance(chips, int) or chips < 1:
            raise UserError(
                f"{source}: board '{name}' must have a positive integer chip count, got {chips!r}"
            )
    spec = ChipSpec(
        name=str(data["name"]),
        description=str(data["description"]),
        topology=_build(Topology, data["topology"], "topology", source),
        core=_build(CoreLimits, data["core"], "core", source),
        synapse=_build(SynapseEncoding, data["synapse"], "synapse", source),
        numbers=_build(NumberFormats, data["numbers"], "numbers", source),
        energy_pj=cost_tables("energy_pj"),
        time_ns=cost_tables("time_ns"),
        boards={str(k).lower().replace("-", "_"): int(v) for k, v in boards.items()},
    )
    _check(spec, source)
    return spec


def _check(spec: ChipSpec, source: str) -> None:
    """Reject values that make no sense (a zero-neuron core, a mesh smaller than the chip)."""
    for f in dataclasses.fields(CoreLimits):
        if getattr(spec.core, f.name) < 1:
            raise UserError(f"{source}: core.{f.name} must be >= 1, got {getattr(spec.core, f.name)}")
    t = spec.topology
    if t.cores_per_chip < 1 or t.cores_per_tile < 1:
        raise UserError(f"{source}: topology.cores_per_chip and cores_per_tile must be >= 1")
    if t.mesh_tiles_x * t.mesh_tiles_y * t.cores_per_tile < t.cores_per_chip:
        raise UserError(
            f"{source}: the mesh ({t.mesh_tiles_x} x {t.mesh_tiles_y} tiles of {t.cores_per_tile} cores) "
            f"is smaller than cores_per_chip = {t.cores_per_chip}"
        )
    s = spec.synapse
    if s.word_bits < 1 or s.synapses_per_group < 1 or s.header_bits < 0:
        raise UserError(f"{source}: synapse.word_bits and synapses_per_group must be >= 1")


def load_chip(name_or_path: str | Path, overrides_path: str | Path | None = None) -> ChipSpec:
    """Load a chip description: a known name (``loihi1``, ``loihi2``, ``loihi`` = ``loihi2``) or a TOML
    path holding a complete description; then apply ``overrides_path`` (any subset of the keys)."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text:
        path = Path(text)
    else:
        key = ALIASES.get(text.lower(), text.lower())
        path = TARGETS_DIR / f"{key}.toml"
        if not path.exists():
            known = _known_names()
            raise UserError(
                f"unknown Loihi target '{text}'{did_you_mean(text, known)}; known: {', '.join(known)}"
            )
    data = _read_toml(path)
    source = str(path)
    if overrides_path is not None:
        ov_path = Path(overrides_path)
        _merge(data, _read_toml(ov_path), "", ov_path)
        source = f"{path} + {ov_path}"
    return _spec_from_dict(data, source)

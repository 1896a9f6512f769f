"""``run_lava.py``: the script that runs an artifact's ``network.net`` in Lava, written next to it.

The script is :mod:`.run_lava_template` with its configuration block (between the ``snnc:config``
markers) filled in from the lowered network: the steps per sample, netx's ``reset_offset``, the input
layout netx's input port has, the input coding and the readout.  Those are what the netx file does not
carry and what a user loading it by hand gets wrong (netx's default ``reset_offset = 0`` resets every
layer one step early; an input -> flatten -> dense network wants PyTorch's C, H, W flattening).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from snnc.errors import UnsupportedError

from .bitacc import ACT_SHIFT, LayerKind
from .lower import LoihiNet

SCRIPT_FILE = "run_lava.py"
TEMPLATE = Path(__file__).with_name("run_lava_template.py")
# snnc's reset of a layer at depth d is Lava step d + 1; netx resets block k at reset_offset + 1 + k, and
# block k of a netx chain is at depth k + 1 (verified spike for spike by `make interop-lava`)
RESET_OFFSET = 1
_BEGIN, _END = "# snnc:config-begin", "# snnc:config-end"
_ASSIGN = re.compile(r"^(?P<name>[A-Z_]+)(?P<annotation>: [^=]+)? = (?P<value>.*?)(?P<comment>  # .*)?$")


def lava_config(net: LoihiNet, timesteps: int) -> dict[str, Any]:
    """The configuration block's values for ``net`` presented for ``timesteps`` steps.

    Raises UnsupportedError when netx's chain cannot carry the readout (it is not the last block).
    """
    blocks, depths = [], []
    for layer, depth in zip(net.layers, net.depths, strict=True):
        if layer.kind not in (LayerKind.INPUT, LayerKind.FLATTEN):
            kind = "dense" if layer.kind is LayerKind.DENSE else "conv"
            blocks.append((layer.name, kind, tuple(int(s) for s in layer.shape)))
            depths.append(depth)
    if net.readout.layer != len(net.layers) - 1:
        raise UnsupportedError(f"the readout '{net.layers[net.readout.layer].name}' is not the last netx block")
    if depths != list(range(1, len(blocks) + 1)):  # netx's per-block reset offsets assume one step per block
        raise UnsupportedError(f"the netx blocks are at depths {depths}, not one step apart; netx's resets would "
                               "not match snnc's")
    first = net.layers[1].kind if len(net.layers) > 1 else LayerKind.FLATTEN
    input_shape = tuple(int(s) for s in net.layers[0].shape)
    # a first conv reads netx's (W, H, C) port; a first dense reads the flattening its weights were made for
    layout = "whc" if first in (LayerKind.CONV, LayerKind.POOL) and len(input_shape) == 3 else "flat-chw"
    return {
        "NETX_FILE": "network.net",
        "TIMESTEPS": int(timesteps),
        "STEPS_PER_SAMPLE": int(timesteps) + net.latency,
        "RESET_OFFSET": RESET_OFFSET,
        "INPUT_SHAPE": input_shape,
        "INPUT_LAYOUT": layout,
        "INPUT_SCHEME": net.coding.scheme.value,
        "INPUT_LEVELS": float(net.coding.levels),
        "INPUT_MESSAGE_BITS": int(net.coding.message_bits),
        "READOUT": net.readout.kind.value,
        "READOUT_SCALE": [float(s) for s in net.readout.scale.reshape(-1)],
        "READOUT_SHIFT": ACT_SHIFT,
        "BLOCKS": blocks,
    }


def _render(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], tuple):  # one block per line
        return "[\n" + "".join(f"    {item!r},\n" for item in value) + "]"
    return repr(value)


def render_script(config: dict[str, Any]) -> str:
    """The template's text with every assignment of its configuration block set from ``config`` (each
    name of the block must be in ``config`` and each key of ``config`` in the block)."""
    text = TEMPLATE.read_text()
    head, rest = text.split(_BEGIN, 1)
    block, tail = rest.split(_END, 1)
    assigns = []
    for line in block.splitlines()[1:]:  # the first line is the marker's own comment
        m = _ASSIGN.match(line)
        if m is None:
            raise ValueError(f"{TEMPLATE.name}: not an assignment in the configuration block: {line!r}")
        assigns.append(m)
    names = {m["name"] for m in assigns}
    if names != set(config):
        raise ValueError(f"{TEMPLATE.name}: configuration names {sorted(names ^ set(config))} do not match")
    lines = [f"{m['name']}{m['annotation'] or ''} = {_render(config[m['name']])}{m['comment'] or ''}" for m in assigns]
    return head + _BEGIN + "  (written by snnc for this artifact)\n" + "\n".join(lines) + "\n" + _END + tail


def write_run_lava(out_dir: Path, net: LoihiNet, timesteps: int) -> str:
    """Write ``out_dir/run_lava.py`` for ``net``; return its file name."""
    (out_dir / SCRIPT_FILE).write_text(render_script(lava_config(net, timesteps)))
    return SCRIPT_FILE

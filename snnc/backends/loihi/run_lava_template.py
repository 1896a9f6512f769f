"""Run this artifact's ``network.net`` in Lava: lava-dl netx on Lava's fixed-point CPU simulation.

Written by snnc (``--target loihi``) next to ``network.net``; the block between the ``snnc:config``
markers holds what snnc compiled, the rest is the same for every artifact.  It needs Python 3.10 with
lava-nc 0.10 and lava-dl 0.6 (``make interop-lava`` builds one in ``.venv-lava/``), numpy and h5py;
not snnc::

    .venv-lava/bin/python OUT/run_lava.py --data examples/digits/test.npz -o lava.npz [--limit N]

``--data``: an ``.npz`` with ``x`` [N, C, H, W] (or [N, features]) float32 samples, as ``snnc run``
reads; ``--spikes``: an ``.npz`` with ``spikes`` [N, T, C, H, W], input spikes already encoded (what a
rate- or TTFS-coded artifact needs: snnc's generator is torch's; ``snnc.backends.loihi.target.
encode_input`` makes them).  It prints the predictions (and the accuracy when the file holds ``y``) and
writes ``-o``: ``predictions`` [N], ``logits`` [N, classes], ``voltage`` [N, classes] (the readout's
voltage at each sample's last step) and ``spikes_<layer>`` [N, steps, C, H, W] (or [N, steps, n]) for
every netx block, in snnc's C, H, W order.

What the file alone does not say, and how this script sets it up:

* ``reset_offset = 1``: snnc zeroes each layer when its first input arrives, at its synaptic depth d
  (step d + 1 in Lava's steps, counted from 1); netx resets block k at ``reset_offset + 1 + k``.  With
  netx's default 0 every layer is reset one step early and the voltages differ.
* ``reset_interval`` = steps per sample (T input steps + one step of latency per layer): the samples
  run back to back, and every block is reset once per sample.
* the input layout: netx keeps tensors as (x, y, c) = (W, H, C).  A first conv reads (W, H, C): the
  image is transposed.  A network that starts input -> flatten -> dense has no block before the dense
  for netx to transpose from, and its weights expect PyTorch's C, H, W flattening: the image is
  flattened in that order (netx's own W, H, C order would scramble the pixels).
* the input encoding: direct coding sends graded spikes ``clip(round(levels * x), -m, m)``
  (``input_message_bits`` wide, ``m = 2^(bits-1) - 1``) for T steps, then zeros for the latency.
* the readout: the last block is a non-firing integrator; logits = ``floor(v / 64) * scale / T``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

# snnc:config-begin  (replaced by snnc at compile time; these defaults describe no real network)
NETX_FILE = "network.net"
TIMESTEPS = 1  # T: steps each sample is presented
STEPS_PER_SAMPLE = 1  # T + the readout's depth: lava's reset_interval
RESET_OFFSET = 1  # netx.hdf5.Network(reset_offset=...): block k is reset at RESET_OFFSET + 1 + k
INPUT_SHAPE: tuple[int, ...] = (1,)  # one sample, snnc's order (C, H, W)
INPUT_LAYOUT = "flat-chw"  # "whc": transpose to netx's (W, H, C); "flat-chw": flatten in C, H, W order
INPUT_SCHEME = "direct"  # direct | rate | ttfs
INPUT_LEVELS = 1.0  # direct: graded spike = round(INPUT_LEVELS * x)
INPUT_MESSAGE_BITS = 0  # netx.hdf5.Network(input_message_bits=...); 0: binary spikes
READOUT = "voltage"  # voltage: the last block integrates without firing; spike_count: its spikes
READOUT_SCALE: list[float] = [1.0]  # logits = readout * READOUT_SCALE / T
READOUT_SHIFT = 6  # voltage readout: logits use floor(v / 2^READOUT_SHIFT)
BLOCKS: list[tuple[str, str, tuple[int, ...]]] = []  # (snnc layer, netx block kind, shape C, H, W)
# snnc:config-end

HERE = Path(__file__).resolve().parent


def encode(x: np.ndarray) -> np.ndarray:
    """Input spikes [N, STEPS_PER_SAMPLE, *INPUT_SHAPE] for samples ``x`` [N, *INPUT_SHAPE]: the T steps
    the sample is presented, then zeros while it travels through the layers."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), *INPUT_SHAPE)
    out = np.zeros((len(x), STEPS_PER_SAMPLE, *INPUT_SHAPE), dtype=np.int64)
    if INPUT_SCHEME == "direct":
        top = (1 << (INPUT_MESSAGE_BITS - 1)) - 1
        out[:, :TIMESTEPS] = np.clip(np.rint(INPUT_LEVELS * x), -top, top).astype(np.int64)[:, None]
    elif INPUT_SCHEME == "ttfs":  # one spike at round((1 - x) * (T - 1)), none for x <= 0
        xc = np.clip(x, 0.0, 1.0)
        t_fire = np.rint((1.0 - xc) * (TIMESTEPS - 1))
        for t in range(TIMESTEPS):
            out[:, t] = (t_fire == t) & (xc > 0)
    else:
        sys.exit(f"run_lava.py: {INPUT_SCHEME} input coding needs the spikes snnc's generator makes: pass --spikes")
    return out


def to_lava(a: np.ndarray) -> np.ndarray:
    """[..., C, H, W] in snnc's order -> the shape netx's input port has (see INPUT_LAYOUT)."""
    lead = a.shape[: a.ndim - len(INPUT_SHAPE)]
    if INPUT_LAYOUT == "whc":
        return np.moveaxis(a, (-3, -2, -1), (-1, -2, -3))  # C, H, W -> W, H, C
    return a.reshape(*lead, -1)  # C-order flattening of C, H, W: PyTorch's


def from_lava(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A block's [..., W, H, C] (or [..., n]) -> [..., C, H, W] (or [..., n])."""
    return np.moveaxis(a, (-3, -2, -1), (-1, -2, -3)) if len(shape) == 3 else a


def run(spikes_in: np.ndarray) -> dict[str, Any]:
    """Run the samples back to back (``spikes_in`` [N, STEPS_PER_SAMPLE, *INPUT_SHAPE]) in one Lava run of
    N * STEPS_PER_SAMPLE steps; return predictions, logits, readout voltages and every block's spikes."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io

    n = len(spikes_in)
    total = n * STEPS_PER_SAMPLE
    net = netx.hdf5.Network(net_config=str(HERE / NETX_FILE), input_message_bits=INPUT_MESSAGE_BITS,
                            reset_interval=STEPS_PER_SAMPLE, reset_offset=RESET_OFFSET)
    if len(net.layers) != len(BLOCKS):
        sys.exit(f"run_lava.py: netx made {len(net.layers)} blocks of {NETX_FILE}; snnc wrote {len(BLOCKS)}")
    data = to_lava(spikes_in.reshape(total, *INPUT_SHAPE))  # [steps, *port shape]
    if tuple(data.shape[1:]) != tuple(net.inp.shape):
        sys.exit(f"run_lava.py: the input is {data.shape[1:]} in {INPUT_LAYOUT} layout, netx's port is {net.inp.shape}")
    source = io.source.RingBuffer(data=np.moveaxis(data, 0, -1).astype(np.int32))  # time is the last axis
    source.s_out.connect(net.inp)
    sinks = []
    for block in net.layers:  # every block's spikes, step by step
        sink = io.sink.RingBuffer(shape=block.out.shape, buffer=total)
        block.out.connect(sink.a_in)
        sinks.append(sink)
    voltage_reader = None
    if READOUT == "voltage":  # the integrator's voltage at the last step of every sample
        voltage_reader = io.sink.Read(buffer=n, interval=STEPS_PER_SAMPLE, offset=STEPS_PER_SAMPLE - 1)
        voltage_reader.connect_var(net.layers[-1].neuron.v)
    net.run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    try:
        spikes = {}
        for (name, _, shape), sink in zip(BLOCKS, sinks, strict=True):
            s = np.moveaxis(np.asarray(sink.data.get()), -1, 0)  # [total, *block shape]
            spikes[name] = from_lava(s, shape).reshape(n, STEPS_PER_SAMPLE, *shape).astype(np.int32)
        voltage = None
        if voltage_reader is not None:
            v = np.moveaxis(np.asarray(voltage_reader.data.get()), -1, 0)  # [n, *readout shape]
            voltage = from_lava(v, BLOCKS[-1][2]).reshape(n, -1).astype(np.int64)
    finally:
        net.stop()
    if voltage is not None:
        readout = np.floor_divide(voltage, 1 << READOUT_SHIFT)
    else:
        # the last block's own T steps, the last T of each sample (before them it fires unreset)
        readout = spikes[BLOCKS[-1][0]][:, -TIMESTEPS:].sum(axis=1).reshape(n, -1)
    logits = readout * np.asarray(READOUT_SCALE) / TIMESTEPS
    return {"predictions": logits.argmax(axis=1), "logits": logits.astype(np.float32), "voltage": voltage,
            "spikes": spikes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--data", type=Path, help=".npz with x [N, ...] (and optionally y [N])")
    given.add_argument("--spikes", type=Path, help=".npz with spikes [N, T, ...]: input spikes already encoded")
    parser.add_argument("-o", "--output", type=Path, help="write predictions, logits, voltage, spikes_<layer>")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    args = parser.parse_args(argv)
    with np.load(args.data or args.spikes) as f:
        y = f["y"][: args.limit] if "y" in f.files else None
        if args.data is not None:
            spikes_in = encode(f["x"][: args.limit])
        else:  # T given steps, then the latency's zeros
            given_spikes = np.asarray(f["spikes"][: args.limit])
            spikes_in = np.zeros((len(given_spikes), STEPS_PER_SAMPLE, *INPUT_SHAPE), dtype=np.int64)
            spikes_in[:, : given_spikes.shape[1]] = given_spikes.reshape(len(given_spikes), -1, *INPUT_SHAPE)
    result = run(spikes_in)
    pred = result["predictions"]
    print(f"{len(pred)} samples, {STEPS_PER_SAMPLE} steps each (T = {TIMESTEPS}), Lava fixed_pt CPU simulation")
    print("predictions:", " ".join(str(int(p)) for p in pred[:50]) + (" ..." if len(pred) > 50 else ""))
    if y is not None:
        print(f"accuracy: {float((pred == y).mean()):.4f}")
    if args.output is not None:
        arrays = {"predictions": pred, "logits": result["logits"]}
        if result["voltage"] is not None:
            arrays["voltage"] = result["voltage"]
        arrays.update({f"spikes_{name}": s for name, s in result["spikes"].items()})
        np.savez_compressed(args.output, **arrays)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

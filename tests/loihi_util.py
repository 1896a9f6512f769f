"""Shared by the Loihi tests: the chip's populations against the torch simulator, spike for spike."""

from __future__ import annotations

import numpy as np
from conversion_util import SIM

from snnc.backends.loihi.lower import lower
from snnc.backends.loihi.target import run_net


def synapse_groups(net, layer) -> list[tuple[str, object]]:
    """(source layer name, synapse group) of every synapse group of ``layer`` (one per source of a join),
    leaving out the per-channel exponent classes (loihi-quantize{channel-exponents}) of a group."""
    names = [x.name for x in net.layers]
    srcs = layer.inputs or (names.index(layer.name) - 1,)
    return [(names[k], g) for k, g in zip(srcs, (layer, *layer.extra), strict=True) if not g.exp_class]


def assert_spike_for_spike(q, x: np.ndarray, timesteps: int) -> None:
    """Every population of the chip, shifted by its depth, spikes as the torch simulator runs the
    quantised graph ``q`` (counts per neuron), and the logits agree."""
    net = lower(q)
    chip = run_net(net, x, timesteps, keep=True)
    depth = {layer.name: d for layer, d in zip(net.layers, net.depths, strict=True)}
    names = [layer.name for layer in net.layers if layer.has_neurons and layer is not net.layers[net.readout.layer]]
    ref = SIM.run_snn(q, x, timesteps, record=names)
    for name in names:
        counts = chip.outputs[name][:, depth[name] : depth[name] + timesteps].sum(axis=1)
        np.testing.assert_array_equal(counts, np.rint(ref.recorded[name] * timesteps), err_msg=name)
        assert counts.any(), f"{name} never fires: the comparison would be empty"
    np.testing.assert_allclose(chip.logits, ref.logits, rtol=1e-6, atol=1e-6)

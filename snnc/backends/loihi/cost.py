"""Energy and time per timestep of a mapped network, from one table of per-operation costs.

The tables (Davies et al. 2018, SANA-FE) are data in the chip description (:mod:`.hardware`); this
module only combines them with what a mapping (:class:`~.mapping.Mapping`) says each core does per
timestep.  It reads the mapping through the two protocols below, so it does not import the mapper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from .hardware import ChipSpec, CostModel, Resource


class CoreActivity(Protocol):
    """What one mapped core does per timestep (:class:`~.mapping.MappedCore`)."""

    @property
    def usage(self) -> Mapping[Resource, int]: ...
    @property
    def synops(self) -> float: ...
    @property
    def spikes(self) -> float: ...
    @property
    def messages(self) -> float: ...


class MappedActivity(Protocol):
    """A mapped network's cores and spike traffic (:class:`~.mapping.Mapping`)."""

    @property
    def chip(self) -> ChipSpec: ...
    @property
    def cores(self) -> Sequence[CoreActivity]: ...
    @property
    def traffic(self) -> Mapping[str, float]: ...


def estimate_cost(mapping: MappedActivity, model: CostModel = CostModel.DAVIES2018) -> dict[str, float | str]:
    """Energy (pJ) and time (ns) per timestep from the calibrated rates, with one table of per-op costs.

    Energy = synops x synaptic_op + neurons x inactive update + spikes x (active - inactive + spike)
    + messages x (axon_out + within-tile spike) + hops x hop energy (a chip link as ``chip_hop_weight``
    east-west hops).  Time = the slowest core's synops, updates and messages + the barrier sync.
    Spiking neurons are counted as the active updates (a lower estimate of activity).
    """
    e, t = mapping.chip.energy(model), mapping.chip.time(model)
    tr = mapping.traffic
    synops = sum(c.synops for c in mapping.cores)
    neurons = sum(c.usage[Resource.NEURONS] for c in mapping.cores)
    spikes = sum(c.spikes for c in mapping.cores)
    messages = sum(c.messages for c in mapping.cores)
    hop_links = tr["chip_links_per_step"] * mapping.chip.topology.chip_hop_weight
    energy = {
        "synaptic": synops * e.synaptic_op,
        "neurons": neurons * e.neuron_update_inactive
        + spikes * (e.neuron_update_active - e.neuron_update_inactive + e.neuron_spike),
        "messages": messages * (e.axon_out + e.spike_within_tile),
        "mesh": tr["ew_hops_per_step"] * e.hop_ew + tr["ns_hops_per_step"] * e.hop_ns + hop_links * e.hop_ew,
    }
    core_ns = [
        c.synops * t.synaptic_op
        + c.usage[Resource.NEURONS] * t.neuron_update_inactive
        + c.spikes * (t.neuron_update_active - t.neuron_update_inactive + t.neuron_spike)
        + c.messages * (t.axon_out + t.spike_within_tile)
        for c in mapping.cores
    ]
    return {
        "model": model.value,
        "energy_pj_per_step": sum(energy.values()),
        **{f"energy_pj_{k}": v for k, v in energy.items()},
        "time_ns_per_step": max(core_ns, default=0.0) + t.barrier_sync,
        "synops_per_step": synops,
        "spikes_per_step": spikes,
    }

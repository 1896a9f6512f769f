"""loihi-map: place the quantised network's neurons on Loihi cores and chips (an analysis).

Lowers the graph to Loihi layers (``snnc.backends.loihi.lower``), measures every population's spike
rate (spikes per neuron per timestep) by simulating the quantised graph with the context's simulator
on ``samples`` calibration samples, and maps the network onto the chip described by ``chip``
(``loihi1``, ``loihi2``, or a TOML path) with ``config`` (a TOML overriding any of its values) by
``snnc.backends.loihi.mapping.map_network``: fewest cores within every per-core limit first, then
the spike traffic between cores weighted by hops.  Without calibration data the rates are 0 (a
note says so): the cores are right, the traffic and energy are not.

Attaches the ``Mapping`` to ``graph.analyses`` (the Loihi target writes it to
``mapping.json``) and a summary in ``ctx.results["loihi-map"]``; changes nothing else.
Requires: ``loihi-quantize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from snnc.backends.loihi.hardware import load_chip
from snnc.backends.loihi.lower import calibrated_rates, lower
from snnc.backends.loihi.mapping import DEFAULT_PARTITION, map_network, network_from_layers
from snnc.errors import UserError
from snnc.ir import Graph
from snnc.pass_manager import Pass, PassContext, register_pass


@register_pass
@dataclass(frozen=True)
class LoihiMap(Pass):
    name: ClassVar[str] = "loihi-map"
    analysis: ClassVar[bool] = True
    chip: str = "loihi2"
    config: str = ""  # a TOML file overriding values of the chip description
    samples: int = 256  # calibration samples simulated for the spike rates (0: all)

    def option_problems(self) -> list[str]:
        problems = [f"samples={self.samples} must be >= 0 (0: all)"] if self.samples < 0 else []
        try:  # a chip name or override file that does not load is known before any work
            load_chip(self.chip, self.config or None)
        except UserError as e:
            problems.append(str(e))
        return problems

    def apply(self, ctx: PassContext, graph: Graph) -> None:

        chip = load_chip(self.chip, self.config or None)
        net = lower(graph)
        rates = calibrated_rates(ctx, graph, net, self.samples)
        if rates is None:
            ctx.note("loihi-map: no calibration data; spike traffic and energy assume zero spike rates")
            rates = {}
        # minutes on a network of thousands of cores (densenet121): a status line while it runs
        with ctx.track(f"{self.name}: partition strategies and placement", len(DEFAULT_PARTITION) + 1) as bar:
            mapping = map_network(network_from_layers(net.layers, rates), chip, advance=bar.advance)
        graph.analyses.put(mapping)
        ctx.results[self.name] = summary(mapping)


def summary(mapping) -> dict[str, Any]:
    """The headline numbers of a mapping (``snnc.backends.loihi.mapping.Mapping``)."""
    return {
        "chip": mapping.chip.name,
        "cores_used": mapping.cores_used,
        "chips_used": mapping.chips_used,
        "lower_bound": mapping.lower_bound,
        "cores_over_lower_bound": mapping.cores_used / max(mapping.lower_bound, 1),
        "mapping_seconds": mapping.seconds,
        "spikes_per_step": mapping.traffic["spikes_per_step"],
        "inter_core_spikes_per_step": mapping.traffic["inter_core_spikes_per_step"],
    }

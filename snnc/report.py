"""report.json (DESIGN §6): schema, builder and the table printers."""

from __future__ import annotations

from typing import Any

from snnc.energy import ann_energy_pj, energy_pj

SCHEMA_VERSION = 4  # 2: totals.hoisted_macs, layers[].hoisted_macs, energy_pj["45nm_hoisted"]; 3: pipeline_full;
# 4: simulation.execution
_TOTALS = ("neurons", "macs", "sops", "spikes_per_sample", "analog_macs", "hoisted_macs")


def build_report(
    *,
    source: dict[str, Any],
    target: str,
    pipeline: str,
    pipeline_full: str | None = None,
    timesteps: int,
    counts: dict[str, Any],
    accuracy: dict[str, Any] | None,
    target_report: dict[str, Any],
    notes: list[str],
    pass_results: dict[str, Any],
    source_macs: float | None = None,
) -> dict[str, Any]:
    from snnc import __version__

    totals = counts["totals"]
    spiking = counts.get("simulated", False)
    if spiking:
        energy = energy_pj(totals["analog_macs"], totals["sops"])
        # loop-invariant layers (direct-coded input, no neuron between) computed once: docs/energy.md
        energy["45nm_hoisted"] = energy_pj(totals["hoisted_macs"], totals["sops"])["45nm"]
    else:
        energy = {"45nm": ann_energy_pj(totals["macs"])}
    if "loihi_pj" in target_report:
        energy["loihi"] = target_report["loihi_pj"]
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "snnc_version": __version__,
        "source": source,
        "target": target,
        "pipeline": pipeline,  # canonical: the options that differ from their defaults
        "pipeline_full": pipeline if pipeline_full is None else pipeline_full,  # every option of every pass
        "timesteps": timesteps,
        "layers": counts["layers"],
        "totals": {k: totals[k] for k in _TOTALS},
        "energy_pj": energy,
        # the reference is the source model's dense MACs (a target may add ops, e.g. input scaling)
        "ann_energy_pj": ann_energy_pj(totals["macs"] if source_macs is None else source_macs),
        "target_report": target_report,
        "notes": notes,
        "passes": {k: v for k, v in pass_results.items() if k != "count-ops"},
    }
    if counts.get("execution"):  # which order the reference simulator ran the counts' simulation in
        report["simulation"] = {"execution": counts["execution"]}
    if accuracy is not None:
        report["accuracy"] = accuracy
    return report

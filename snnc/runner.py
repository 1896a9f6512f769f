"""Run and evaluate artifact directories (``snnc run`` / ``snnc eval``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snnc.backends.torch.simulator import TorchSimulator
from snnc.energy import ann_energy_pj, energy_pj
from snnc.errors import InputFileError, UserError
from snnc.ir import Graph, load_graph
from snnc.ir import ops as O
from snnc.ir.parser import parse_graph
from snnc.ir.serialize import load_params
from snnc.targets import get_target


@dataclass
class Artifact:
    path: Path
    graph: Graph
    report: dict[str, Any]

    @property
    def target(self) -> str:
        return str(self.report.get("target", "torch"))

    def source_graph(self) -> Graph | None:
        text = self.path / "source.snnir"
        if not text.exists():
            return None
        g = parse_graph(text.read_text())
        g.params = load_params(self.path / "source.safetensors")
        return g


def open_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    if not (path / "graph.snnir").exists():
        raise InputFileError(f"{path}: not an snnc artifact directory (no graph.snnir); run `snnc compile` first")
    report_path = path / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return Artifact(path, load_graph(path), report)


def is_spiking(graph: Graph) -> bool:
    return any(isinstance(n.op, (O.Neuron, O.Encode)) for n in graph.nodes)


RUN_BATCH = 256  # samples per call into the target's run when progress is shown (the simulator's own batch)


def run_artifact(art: Artifact, x: np.ndarray, timesteps: int | None, mode: str, backend: str | None,
                 device: str = "cpu", progress: Any = None) -> dict[str, np.ndarray]:
    """Logits and predictions of the artifact on ``x`` with the chosen backend (default: the artifact's
    own target), through that target's ``run``.  ``progress`` (a progress factory, snnc/progress.py):
    the samples go in pieces of at most ``RUN_BATCH``, a bar step each (the backends compute each
    sample apart from the others)."""
    backend = backend or art.target
    target = get_target(backend)
    if mode == "ann" or not is_spiking(art.graph):
        if target.name != "torch":
            raise UserError(f"--mode ann runs on the torch backend only (not '{backend}')")
        sim = TorchSimulator(device)
        logits = _batched(lambda xb: {"logits": sim.run_ann(art.graph, xb)[art.graph.outputs[0]]}, x, progress,
                          f"run ({backend}, ann)")["logits"]
        return {"logits": logits, "predictions": logits.argmax(1)}
    t = timesteps or art.graph.attrs.timesteps or int(art.report.get("timesteps") or 0)
    if not t:
        raise UserError("this graph has no timesteps attribute; pass --timesteps T")
    return _batched(lambda xb: target.run(art.path, art.graph, xb, t, device), x, progress, f"run ({backend}, T={t})")


def _batched(fn: Any, x: Any, progress: Any, description: str) -> dict[str, np.ndarray]:
    """``fn(x)``, or with ``progress`` ``fn`` on consecutive pieces of at most ``RUN_BATCH`` samples,
    concatenated.  The pieces differ in size by at most one, so that no piece of one sample sends a
    batch to a backend's batch-1 code when the whole would not have."""
    pieces = -(-len(x) // RUN_BATCH)
    if progress is None or pieces <= 1:
        return fn(x)
    bounds = np.cumsum([0] + [len(r) for r in np.array_split(np.arange(len(x)), pieces)])
    parts: list[dict[str, np.ndarray]] = []
    with progress(description, pieces) as bar:
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            parts.append(fn(x[int(start) : int(stop)]))
            bar.advance()
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def evaluate(art: Artifact, x: np.ndarray, y: np.ndarray, timesteps: list[int], device: str = "cpu"
             ) -> dict[str, Any]:
    """The ``snnc eval`` table: accuracy, spikes, SOPs, MACs and energy per T (DESIGN §6)."""
    sim = TorchSimulator(device)
    src = art.source_graph()
    source_acc = None
    source_macs = art.report.get("totals", {}).get("macs")
    source_rows: list[dict[str, Any]] = []
    if src is not None and is_spiking(src):
        # a direct-coded source: as written it multiplies its analog-input layer at every step;
        # the hoisted variant computes its loop-invariant layers once (shown apart, not as baseline)
        for t in timesteps:
            run = sim.run_snn(src, x, t)
            macs, sops = float(sum(run.macs.values())), float(sum(run.sops.values()))
            hoisted = float(sum(run.hoisted_macs.values()))
            acc = float((run.predictions == y).mean())
            for variant, m in (("direct", macs), ("direct, first layer hoisted", hoisted)):
                source_rows.append({"variant": variant, "timesteps": t, "accuracy": acc, "macs": m, "sops": sops,
                                    "spikes_per_sample": float(sum(run.spikes.values())),
                                    "energy_pj": energy_pj(m, sops)})
    elif src is not None:
        logits = sim.run_ann(src, x)[src.outputs[0]]
        source_acc = float((logits.argmax(1) == y).mean())
    results = []
    for t in timesteps:
        run = sim.run_snn(art.graph, x, t)
        macs = float(sum(run.macs.values()))
        sops = float(sum(run.sops.values()))
        hoisted = float(sum(run.hoisted_macs.values()))
        results.append(
            {
                "timesteps": t,
                "accuracy": float((run.predictions == y).mean()),
                "spikes_per_sample": float(sum(run.spikes.values())),
                "sops": sops,
                "macs": macs,
                "hoisted_macs": hoisted,
                "energy_pj": {**energy_pj(macs, sops), "45nm_hoisted": energy_pj(hoisted, sops)["45nm"]},
                "mean_timesteps_used": float(np.mean(run.steps_used)),
            }
        )
    out: dict[str, Any] = {"source_accuracy": source_acc, "results": results}
    if source_rows:
        out["source_results"] = source_rows
    if source_macs is not None:
        out["source_energy_pj"] = {"45nm": ann_energy_pj(float(source_macs))}
    return out

"""One simulation of the quantised graph on the calibration samples, shared by loihi-map and the target.

``loihi-map`` needs the quantised SNN's spike counts on the calibration data (its spike rates) and the
target's report needs its predictions on them (``quantised_snn_accuracy``); with a calibration set no
larger than both sample limits they are the same call of the simulator on the same graph and inputs.  The
run is kept on the graph as an analysis together with a digest of what it was made from (the graph's text,
its parameters, the samples and T); a reader whose call has another digest simulates anew, so a pass that
changes the graph between the two, or other samples, can never be given a stale run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from snnc.ir import Graph, print_graph
from snnc.pass_manager import PassContext


@dataclass(frozen=True, kw_only=True, eq=False)
class CalibrationRun:
    """The simulator's result (``run_snn``) of the graph it is attached to, and the digest of the call."""

    digest: str
    result: Any


def simulate_calibration(ctx: PassContext, graph: Graph, x: np.ndarray, timesteps: int) -> Any:
    """``ctx.simulator.run_snn(graph, x, timesteps)``, or the kept result of that same call."""
    assert ctx.simulator is not None  # callers check for a simulator first
    digest = _digest(graph, x, timesteps)
    kept = graph.analyses.get(CalibrationRun)
    if kept is not None and kept.digest == digest:
        return kept.result
    result = ctx.simulator.run_snn(graph, x, timesteps)
    graph.analyses.put(CalibrationRun(digest=digest, result=result))
    return result


def _digest(graph: Graph, x: np.ndarray, timesteps: int) -> str:
    h = hashlib.sha256(print_graph(graph).encode())
    for name in sorted(graph.params):
        value = np.ascontiguousarray(graph.params[name])
        h.update(f"{name}:{value.dtype}:{value.shape}".encode())
        h.update(value.tobytes())
    h.update(f"x:{x.dtype}:{x.shape}:T={timesteps}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()

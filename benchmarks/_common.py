"""Shared helpers for the benchmarks: timing statistics, environment hygiene, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMG = ROOT / "docs" / "img"


def hygiene(threads: int = 2) -> None:
    """Same settings for every benchmark: passive OpenMP waits, a fixed thread count."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)


def timed(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median and spread (p10, p90) of wall time in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(round(p * (len(times) - 1))))]  # noqa: E731
    return {"median": statistics.median(times), "p10": q(0.1), "p90": q(0.9), "n": len(times)}


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def zero_subnormals(module) -> int:
    """Zero subnormal float32 weights (they make timings erratic); returns how many."""
    import torch

    tiny = torch.finfo(torch.float32).tiny
    count = 0
    with torch.no_grad():
        for p in module.parameters():
            mask = (p.abs() < tiny) & (p != 0)
            count += int(mask.sum())
            p[mask] = 0
    return count

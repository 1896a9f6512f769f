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


def plot_accuracy_vs_timesteps(rows: list[dict[str, Any]], ann_acc: dict[str, float], path: Path, *,
                               title: Callable[[str], str] = str, panel_width: float = 4.2,
                               dpi: int = 100) -> None:
    """One panel per model: accuracy against T (log scale) per method, the ANN's as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(ann_acc)
    fig, axes = plt.subplots(1, len(models), figsize=(panel_width * len(models), 3.8), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        for method in sorted({r["method"] for r in rows if r["model"] == m}):
            pts = sorted((r["timesteps"], r["accuracy"]) for r in rows if r["model"] == m and r["method"] == method)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
        ax.axhline(ann_acc[m], color="k", linestyle="--", label="ANN")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("timesteps T")
        ax.set_ylabel("test accuracy")
        ax.set_title(title(m))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)

"""Data-parallel execution on torch.distributed (DESIGN §1, "Beyond one process"; docs/cluster.md).

``torchrun --nproc-per-node N --no-python snnc compile ...`` starts N copies of snnc; each calls
:func:`init` (a no-op outside torchrun), which joins the process group torchrun describes in the
environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...): gloo on CPU, NCCL when the device is a GPU.

The data is split by *batch*: global batch i (of the batch size one process would use) goes to rank
i mod N, so that every batch holds the same samples, in the same order, as in a one-process run, and
its activations are the same numbers.  Statistics then merge exactly:

* :func:`all_max` and :func:`all_sum` of integers (running maxima, histogram counts, correct
  predictions) are exact whatever the order;
* float sums are never all-reduced: :func:`gather_rows` collects each batch's partial sums under its
  global batch index, and every rank adds them up in batch order, as one process does.

So N processes compute bit for bit what one computes (given the same per-batch numerics: the same
device and thread count), and only rank 0 writes (:func:`is_writer`).

Training (d2e-finetune) is the exception: it is data-parallel with torch's DistributedDataParallel
(:func:`data_parallel`), each rank taking its contiguous share of every global batch
(:func:`my_share`); DDP averages the gradients with an all-reduce in ``backward``, so every rank keeps
the same parameters, which equal one process's up to float rounding (not bit for bit).  The process group is
torch.distributed's own (a process-wide state, as in every torch program); nothing here keeps more.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def _dist():
    import torch.distributed as dist

    return dist


def launched() -> bool:
    """Started by torchrun (or another launcher that sets the torch.distributed environment)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init(device: str = "cpu") -> None:
    """Join the process group of a torchrun launch (gloo on CPU, NCCL on CUDA); no-op otherwise."""
    if not launched():
        return
    dist = _dist()
    if dist.is_initialized():
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def shutdown() -> None:
    if active():
        _dist().destroy_process_group()


def active() -> bool:
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return _dist().get_rank() if active() else 0


def world_size() -> int:
    return _dist().get_world_size() if active() else 1


def is_writer() -> bool:
    """Only rank 0 writes artifacts, reports and files."""
    return rank() == 0


def batch_indices(total_batches: int) -> range:
    """The global batch indices this rank computes (i mod world size == rank)."""
    return range(rank(), total_batches, world_size())


def my_batches(x: Any, y: Any, batch_size: int, limit: int | None = None) -> Iterator[tuple[int, Any, Any]]:
    """(global batch index, x batch, y batch or None) for this rank's share of ``x``: the first
    ``limit`` batches (all: None) dealt round-robin over the ranks."""
    total = -(-len(x) // batch_size)
    if limit is not None:
        total = min(total, limit)
    for i in batch_indices(total):
        s = slice(i * batch_size, (i + 1) * batch_size)
        yield i, x[s], (None if y is None else y[s])


# Samples per unit of a shared simulation (the compile report's, count-ops', snnc eval's batches): every
# process count cuts the data into the same units, so each unit's numbers, and their merge in unit
# order, are the same on 1 or N processes.  64 keeps 2-8 ranks busy on a few hundred samples and is
# the torch simulator's own chunk on resnet18 at 64x64 (a smaller unit only adds per-call overhead).
UNIT = 64


def map_units(fn: Callable[[slice], Any], n: int, unit: int = UNIT, progress: Any = None) -> list[Any]:
    """``fn(rows)`` for each unit of ``unit`` consecutive rows of ``n`` (``rows`` a slice), the units
    dealt round-robin over the ranks (:func:`batch_indices`); every rank returns every unit's result,
    in unit order (:func:`gather_rows`).  ``progress``: a bar with ``advance()``, moved once per unit
    this rank computes.  A collective: under torchrun every rank must call it with the same ``n``."""
    total = -(-n // unit)
    mine: dict[int, Any] = {}
    for i in batch_indices(total):
        mine[i] = fn(slice(i * unit, min(n, (i + 1) * unit)))
        if progress is not None:
            progress.advance()
    return gather_rows(mine)


def my_units(n: int, unit: int = UNIT) -> int:
    """How many of the units of ``n`` rows :func:`map_units` gives this rank."""
    return len(batch_indices(-(-n // unit)))


def my_share(rows: np.ndarray) -> np.ndarray:
    """This rank's part of one global batch ``rows`` (data-parallel training): ``rows`` cut into
    world-size contiguous pieces whose sizes differ by at most one (``np.array_split``), piece
    ``rank``; all of ``rows`` in one process.  A piece may be empty when the batch has fewer rows
    than there are ranks."""
    if not active():
        return rows
    return np.array_split(rows, world_size())[rank()]


def data_parallel(module: Any) -> Any:
    """``module`` wrapped in torch's ``DistributedDataParallel``, which all-reduces (averages) the
    gradients over the ranks during ``backward`` and so keeps every rank's parameters equal; the
    module itself outside torchrun.  Its parameters must already live on this rank's device (the
    GPU ``LOCAL_RANK`` under NCCL, the CPU under gloo)."""
    if not active():
        return module
    import torch
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def _tensor(a: np.ndarray):
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a))
    backend = _dist().get_backend()
    return t.cuda() if backend == "nccl" else t


def all_max(a: np.ndarray) -> np.ndarray:
    """Element-wise maximum over ranks (exact)."""
    if not active():
        return a
    t = _tensor(np.asarray(a))
    _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
    return t.cpu().numpy()


def all_sum(a: np.ndarray) -> np.ndarray:
    """Element-wise sum over ranks of an integer array (exact: integers only)."""
    a = np.asarray(a)
    if a.dtype.kind not in "iub":
        raise TypeError(f"all_sum merges integers only (exact in any order), not {a.dtype}")
    if not active():
        return a
    t = _tensor(a.astype(np.int64))
    _dist().all_reduce(t, op=_dist().ReduceOp.SUM)
    return t.cpu().numpy()


def gather_rows(rows: dict[int, Any]) -> list[Any]:
    """Every rank's ``{global batch index: partial result}``, merged and in batch order (the same
    list on every rank), so that float sums run in the order of one process."""
    if active():
        parts: list[Any] = [None] * world_size()
        _dist().all_gather_object(parts, rows)
        merged: dict[int, Any] = {}
        for part in parts:
            merged.update(part)
        rows = merged
    return [rows[i] for i in sorted(rows)]


def barrier() -> None:
    if active():
        _dist().barrier()


# ---------------------------------------------------------------------------------------
# snnc eval, data-parallel


def evaluate(art: Any, data: Any, timesteps: list[int], device: str = "cpu", batch_size: int = UNIT,
             progress: Any = None) -> dict[str, Any]:
    """``snnc eval``'s table (runner.evaluate's keys), streamed batch by batch from ``data`` (a
    :class:`snnc.data.Data`) and shared over the ranks: each batch's correct predictions (integers)
    and per-batch sums of spikes, SOPs, MACs and timesteps used are gathered under the batch's index
    and added up in batch order, so any number of processes gives the same figures."""
    from snnc.backends.torch.simulator import TorchSimulator
    from snnc.energy import ann_energy_pj, energy_pj
    from snnc.runner import is_spiking

    sim = TorchSimulator(device, batch_size=batch_size)
    src = art.source_graph()
    direct_source = src is not None and is_spiking(src)
    total = -(-len(data.x) // batch_size)
    mine = batch_indices(total)
    rows: dict[int, dict[Any, Any]] = {}
    bar_ctx = progress("eval", len(mine)) if progress is not None else None
    bar = bar_ctx.__enter__() if bar_ctx is not None else None
    try:
        for i, xb, yb in my_batches(data.x, data.y, batch_size, total):
            row: dict[Any, Any] = {"n": len(yb)}
            if direct_source:
                for t in timesteps:
                    row[("src", t)] = _run_sums(sim.run_snn(src, xb, t), yb)
            elif src is not None:
                row["ann"] = int((sim.run_ann(src, xb)[src.outputs[0]].argmax(1) == yb).sum())
            for t in timesteps:
                row[t] = _run_sums(sim.run_snn(art.graph, xb, t), yb)
            rows[i] = row
            if bar is not None:
                bar.advance()
    finally:
        if bar_ctx is not None:
            bar_ctx.__exit__(None, None, None)
    ordered = gather_rows(rows)
    n = sum(r["n"] for r in ordered)

    def mean(key: Any, field: str) -> float:
        acc = 0.0
        for r in ordered:  # batch order: the same float sum on every rank and world size
            acc += r[key][field]
        return acc / n

    source_acc = None
    source_rows: list[dict[str, Any]] = []
    if direct_source:
        for t in timesteps:
            key = ("src", t)
            macs, sops, hoisted = mean(key, "macs"), mean(key, "sops"), mean(key, "hoisted")
            acc = sum(r[key]["correct"] for r in ordered) / n
            for variant, m in (("direct", macs), ("direct, first layer hoisted", hoisted)):
                source_rows.append({"variant": variant, "timesteps": t, "accuracy": acc, "macs": m, "sops": sops,
                                    "spikes_per_sample": mean(key, "spikes"), "energy_pj": energy_pj(m, sops)})
    elif src is not None:
        source_acc = sum(r["ann"] for r in ordered) / n
    results = []
    for t in timesteps:
        macs, sops, hoisted = mean(t, "macs"), mean(t, "sops"), mean(t, "hoisted")
        results.append({
            "timesteps": t,
            "accuracy": sum(r[t]["correct"] for r in ordered) / n,
            "spikes_per_sample": mean(t, "spikes"),
            "sops": sops,
            "macs": macs,
            "hoisted_macs": hoisted,
            "energy_pj": {**energy_pj(macs, sops), "45nm_hoisted": energy_pj(hoisted, sops)["45nm"]},
            "mean_timesteps_used": mean(t, "steps"),
        })
    out: dict[str, Any] = {"source_accuracy": source_acc, "results": results, "samples": n}
    if source_rows:
        out["source_results"] = source_rows
    source_macs = art.report.get("totals", {}).get("macs")
    if source_macs is not None:
        out["source_energy_pj"] = {"45nm": ann_energy_pj(float(source_macs))}
    return out


def _run_sums(run: Any, y: np.ndarray) -> dict[str, Any]:
    """One batch's integers and sums (per-sample means × batch size) of an SNN run."""
    k = len(y)
    return {
        "correct": int((run.predictions == y).sum()),
        "spikes": float(sum(run.spikes.values())) * k,
        "sops": float(sum(run.sops.values())) * k,
        "macs": float(sum(run.macs.values())) * k,
        "hoisted": float(sum(run.hoisted_macs.values())) * k,
        "steps": float(np.sum(run.steps_used)),
    }

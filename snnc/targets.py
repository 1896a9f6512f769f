"""Compilation targets.  Each lives in ``snnc.backends.<name>`` and loads lazily, so that
``import snnc`` never imports TVM or h5py."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from snnc.errors import UserError, did_you_mean
from snnc.ir import Graph
from snnc.pass_manager import PassContext


@dataclass
class TargetOptions:
    """Options a user gives ``snnc compile`` that targets may read."""

    target_config: Path | None = None
    board: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Target(Protocol):
    """A compilation target.  It may also define ``default_pipeline(graph, has_calibration) -> str | None``:
    the pipeline to run when the user names none (None: the driver's default); the driver then appends
    ``pipeline_suffix()``, leaving out the suffix passes the pipeline already runs.  And it may define
    ``import_legality(graph) -> list[str]``: what it refuses in the *imported* graph that no pass
    changes (an op it has no lowering for, an attribute no pass rewrites), which the driver reports
    right after import, before calibration."""

    name: str

    def pipeline_suffix(self) -> str:
        """Target-specific passes appended to the conversion pipeline ('' for none)."""
        ...

    def legality(self, graph: Graph) -> list[str]:
        """Every reason the graph cannot be compiled (node + pass that fixes it); [] if legal."""
        ...

    def compile(self, graph: Graph, out_dir: Path, ctx: PassContext) -> dict[str, Any]:
        """Write target files into ``out_dir``; return the report's ``target_report``."""
        ...

    def run(self, artifact: Path, graph: Graph, x: np.ndarray, timesteps: int, device: str) -> dict[str, np.ndarray]:
        """Run the SNN of an artifact directory (whose IR is ``graph``) on ``x`` for ``timesteps`` steps:
        ``logits`` (N, classes), ``predictions`` (N,) and, where the target has early exit,
        ``steps_used`` (N,).  ``snnc run --backend NAME`` and differential tests call this."""
        ...


@dataclass(frozen=True, kw_only=True)
class TargetEntry:
    """One target, described once: where its class lives (imported only when the target is used, so
    that ``import snnc`` never imports TVM or h5py) and what it is."""

    name: str
    module: str
    cls: str
    description: str
    extra: str  # the pip extra that installs what it needs (snnc[extra])


TARGETS: dict[str, TargetEntry] = {
    entry.name: entry
    for entry in (
        TargetEntry(name="torch", module="snnc.backends.torch.target", cls="TorchTarget", extra="torch",
                    description="reference simulator (PyTorch), CPU or GPU"),
        TargetEntry(name="tvm", module="snnc.backends.tvm.target", cls="TVMTarget", extra="tvm",
                    description="event-driven kernels generated with TVM (LLVM for the CPU; CUDA where a GPU exists)"),
        TargetEntry(name="loihi", module="snnc.backends.loihi.target", cls="LoihiTarget", extra="loihi",
                    description="Intel Loihi 2: quantise, map cores and chips, lava-dl netx, bit-accurate simulation"),
        TargetEntry(name="loihi2", module="snnc.backends.loihi.target", cls="LoihiTarget", extra="loihi",
                    description="Intel Loihi 2 (the same as loihi)"),
        TargetEntry(name="loihi1", module="snnc.backends.loihi.target", cls="LoihiTarget", extra="loihi",
                    description="Intel Loihi 1: its core limits and costs, the same flow"),
        TargetEntry(name="nir", module="snnc.backends.nir.target", cls="NIRTarget", extra="nir",
                    description="NIR graph file (model.nir) for snnTorch, Norse, Lava-dl, Rockpool, Sinabs, SpiNNaker2"),
    )
}


def get_target(name: str, options: TargetOptions | None = None) -> Target:
    if name not in TARGETS:
        hint = did_you_mean(name, TARGETS)
        raise UserError(f"unknown target '{name}'" + (hint if hint else "; see `snnc targets`"))
    entry = TARGETS[name]
    try:
        mod = importlib.import_module(entry.module)
    except ModuleNotFoundError as e:
        raise UserError(f"target '{name}' is not available: {e.name} is not installed "
                        f"(pip install 'snnc[{entry.extra}]')") from None
    return getattr(mod, entry.cls)(name, options or TargetOptions())

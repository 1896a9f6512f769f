"""Compilation targets.  Each lives in ``snnc.backends.<name>`` and loads lazily, so that
``import snnc`` never imports TVM or h5py."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
    ``pipeline_suffix()``, leaving out the suffix passes the pipeline already runs."""

    name: str
    description: str

    def pipeline_suffix(self) -> str:
        """Target-specific passes appended to the conversion pipeline ('' for none)."""
        ...

    def legality(self, graph: Graph) -> list[str]:
        """Every reason the graph cannot be compiled (node + pass that fixes it); [] if legal."""
        ...

    def compile(self, graph: Graph, out_dir: Path, ctx: PassContext) -> dict[str, Any]:
        """Write target files into ``out_dir``; return the report's ``target_report``."""
        ...


# name -> (module, class, one-line description): the one list of targets
TARGETS: dict[str, tuple[str, str, str]] = {
    "torch": ("snnc.backends.torch.target", "TorchTarget", "reference simulator (PyTorch), CPU or GPU"),
    "tvm": ("snnc.backends.tvm.target", "TVMTarget", "event-driven kernels generated with TVM (LLVM/CUDA)"),
    "loihi": ("snnc.backends.loihi.target", "LoihiTarget", "Intel Loihi 2: quantise, map cores, lava-dl netx"),
    "loihi1": ("snnc.backends.loihi.target", "LoihiTarget", "Intel Loihi 1"),
    "nir": ("snnc.backends.nir.target", "NIRTarget", "NIR graph file for snnTorch, Norse, Lava-dl, SpiNNaker2, ..."),
    "loihi2": ("snnc.backends.loihi.target", "LoihiTarget", "Intel Loihi 2"),
}


def get_target(name: str, options: TargetOptions | None = None) -> Target:
    if name not in TARGETS:
        hint = did_you_mean(name, TARGETS)
        raise UserError(f"unknown target '{name}'" + (hint if hint else "; see `snnc targets`"))
    module, cls, _ = TARGETS[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise UserError(f"target '{name}' is not available: {e.name} is not installed "
                        f"(pip install 'snnc[{name.rstrip('12')}]')") from None
    return getattr(mod, cls)(name, options or TargetOptions())

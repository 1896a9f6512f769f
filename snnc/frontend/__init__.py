"""Frontends: build snnc IR from PyTorch modules, exported programs and model files."""

from snnc.frontend.files import load_model
from snnc.frontend.fx import import_exported, import_module

__all__ = ["import_exported", "import_module", "load_model"]

"""snnc: a compiler for spiking neural networks.

``import snnc`` is light: it imports the IR, the pass manager and the torch frontend,
never TVM or h5py (targets load lazily).
"""

from snnc.errors import SnncError, UserError, VerifyError
from snnc.pass_manager import PassContext, PassManager, register_pass, register_pipeline

__version__ = "0.1.0"


def import_module(module, example_input, name=None):
    """Trace a torch ``nn.Module`` into an snnc Graph (see snnc.frontend.fx.import_module)."""
    from snnc.frontend.fx import import_module as _import_module

    return _import_module(module, example_input, name)


__all__ = [
    "PassContext", "PassManager", "SnncError", "UserError", "VerifyError", "__version__",
    "import_module", "register_pass", "register_pipeline",
]

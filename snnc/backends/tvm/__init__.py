"""The TVM event backend (DESIGN.md §5): event-driven kernels generated as TVMScript/TIR.

* :mod:`snnc.backends.tvm.kernels`: kernel specifications and their TVMScript source
  (event linear/conv/pool/add with the neuron update fused as an epilogue);
* :mod:`snnc.backends.tvm.kernel_cache`: target selection, per-spec compile cache, library export;
* :mod:`snnc.backends.tvm.runtime`: the artifact (``lib.so`` + ``graph.json`` +
  ``params.safetensors``, see ``format.md``) compiler and its numpy + TVM runtime.

Importing this package does not import TVM; the submodules do.
"""

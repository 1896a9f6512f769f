"""The TVM event backend (DESIGN.md §5): event-driven kernels generated as TVMScript/TIR.

* :mod:`snnc.backends.tvm.kernels`: kernel specifications and their TVMScript source
  (event linear/conv/pool/add with the neuron update fused as an epilogue);
* :mod:`snnc.backends.tvm.kernel_cache`: target selection, per-spec compile cache, library export;
* :mod:`snnc.backends.tvm.lower`: a converted IR graph -> a layer graph (legality first);
* :mod:`snnc.backends.tvm.layers`: the layer graph as typed, frozen specs, and its JSON forms
  (the hand-written dict, checked against the parameters; the artifact's ``graph.json``);
* :mod:`snnc.backends.tvm.plan`: per layer, the values it reads and writes, its mode and kernels;
* :mod:`snnc.backends.tvm.build`: the artifact (``lib.so`` + ``graph.json`` +
  ``params.safetensors``, see ``format.md``): parameters in kernel layout, kernels compiled;
* :mod:`snnc.backends.tvm.runtime`: the artifact's numpy + TVM runtime (no torch);
* :mod:`snnc.backends.tvm.target`: the ``tvm`` target of ``snnc compile`` / ``snnc run``.

Importing this package does not import TVM; kernel_cache, build and runtime do.
"""

"""The calls of one timestep, and the generated *step kernels* that make them inside the library.

:func:`step_program` lists, for a batch variant, the calls a timestep makes in order: layer
kernels (:class:`KernelCall`, each argument a runtime buffer named ``(layer, role)``) and the
BLAS products of dense-mode layers (:class:`HostCall`, numpy in the runtime).  :func:`fuse`
turns each maximal run of kernel calls into one :class:`StepKernel`: a generated TIR function
that calls those kernels in sequence through their packed C entry points
(``T.call_cpacked("__tvm_ffi_<name>", ...)``: a direct call resolved by the linker, no lookup,
no Python; a kernel called again, through an alias of its entry point), inside a loop over ``steps``.  When a timestep has no host call, the whole network
is one step kernel and the runtime makes one call for all T timesteps; otherwise it calls each
segment once per step with ``steps = 1``.  A run whose calls take more than ``max_params``
distinct buffers is cut into several step kernels (segments too): a generated function's
build time grows faster than its parameter count (:data:`MAX_STEP_PARAMS`).  Spike lists and state stay in the runtime's buffers
between the calls, exactly as with one Python call per kernel, so the results are the same
bit for bit.

*Layer-major* step kernels (:func:`layer_major_step_kernels`, batch 1, a step without host
calls): the same calls, each run for every step of a block of up to ``block`` steps before the
next call runs; a buffer that holds one step's values (:data:`PER_STEP_ROLES`) has one row
per step of the block (``[block, row]``, :meth:`StepKernel.block_shape`) and each call gets its
step's row as a tensor of the callee's shape, so the results
are those of the step-major kernels bit for bit, while each layer's weights stay in the cache
for the block (``runtime.py``).  A linear layer in mode BLOCK (``layers.Mode``) is instead one
call over the block's steps (``LayerKernel.steps``, given the ``[steps, row]`` views of its
per-step buffers and its tiled weights, role ``tiled_weight``): each weight row is read once per
block; its currents are those of the step-major kernels up to the order of the float sums.

Deterministic: the compiler and the runtime derive the same step kernels (and names) from the
same plan.  CPU only (a CUDA artifact keeps one call per kernel).  No TVM here, except in
:meth:`StepKernel.prim_func`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from snnc.backends.tvm.kernels import Device, Events, LayerKernel, Layout, padded_row
from snnc.backends.tvm.layers import LayerOp
from snnc.backends.tvm.plan import LayerPlan, ValueKind
from snnc.errors import TargetError

# A layer's buffers that hold one step's values (spike lists, currents); every other buffer is
# state (membranes, counts, readout sums) or a parameter, which every step shares.
PER_STEP_ROLES = frozenset({"acc", "cnt_out", "idx_out", "val_out", "dense_in"})
# Layer-major order for a batch of one sample pays off when the network's weights exceed the
# cache (measured: runtime.py's comment); blocks of LAYER_MAJOR_STEPS steps.
LAYER_MAJOR_MIN_WEIGHT_BYTES = 4 << 20
LAYER_MAJOR_STEPS = 16


@dataclass(frozen=True)
class Arg:
    """A runtime value: the buffer (or scalar) ``role`` of layer ``layer`` (``acc``, ``cnt_out``,
    ``v``, ``weight``, ``cur`` and ``dense_in`` of a dense layer, ``vreset`` ...)."""

    layer: str
    role: str


@dataclass(frozen=True, kw_only=True)
class KernelCall:
    """One layer kernel call of layer ``layer``; ``args`` in the order of ``kernel.arg_names()``."""

    layer: str
    kernel: LayerKernel
    args: tuple[Arg, ...]


@dataclass(frozen=True, kw_only=True)
class HostCall:
    """The BLAS product of a dense-mode layer (synaptic current into its ``cur``)."""

    layer: str


def _resolve(plans: list[LayerPlan]) -> dict[str, str]:
    """Each flatten layer's name -> the layer whose buffers it shares (flatten is free)."""
    alias: dict[str, str] = {}
    for plan in plans:
        if plan.op is LayerOp.FLATTEN:
            src = plan.layer.inputs[0]
            alias[plan.name] = alias.get(src, src)
    return alias


def _event_args(kernel: LayerKernel, srcs: list[str]) -> dict[str, Arg]:
    """The operand arguments (``cnt{i}``, ``idx{i}``, ``val{i}``, ``cur{i}``) read from the
    producers' output buffers."""
    out: dict[str, Arg] = {}
    for i, operand in enumerate(kernel.operands):
        if isinstance(operand, Events):
            if operand.layout is not Layout.ROWS:
                raise TargetError(f"kernel {kernel.name}: the runtime passes ROWS event lists only")
            out[f"cnt{i}"] = Arg(srcs[i], "cnt_out")
            out[f"idx{i}"] = Arg(srcs[i], "idx_out")
            if operand.graded:
                out[f"val{i}"] = Arg(srcs[i], "val_out")
        else:
            out[f"cur{i}"] = Arg(srcs[i], "acc")
    return out


def step_program(plans: list[LayerPlan], batch: int | None) -> list[KernelCall | HostCall]:
    """The calls of one timestep of a batch variant (None: any batch size; 1: the batch-1
    kernels where a layer has them), in order.

    A dense layer that reads the analog input makes no call per step (its current is computed
    once per batch); one that reads events densifies them (a kernel into ``dense_in``), then
    its BLAS product (host) writes ``cur``; a convolution on a current has no host product (its
    kernel reads the current); every layer then calls its main kernel."""
    alias = _resolve(plans)
    program: list[KernelCall | HostCall] = []
    for plan in plans:
        if plan.op is LayerOp.FLATTEN:
            continue
        srcs = [alias.get(s, s) for s in plan.layer.inputs]
        main = plan.main[None] if batch is None else plan.kernel_for(batch)
        bound: dict[str, Arg]
        if plan.host_product(batch):
            x = plan.inputs[0]
            if x.kind is ValueKind.EVENTS:
                dk = plan.densify[None] if batch is None else plan.densify_for(batch)
                dargs = _event_args(dk, srcs) | {"acc": Arg(plan.name, "dense_in")}
                program.append(
                    KernelCall(layer=plan.name, kernel=dk, args=tuple(dargs[a] for a in dk.arg_names()))
                )
            if x.kind is not ValueKind.ANALOG:
                program.append(HostCall(layer=plan.name))
            bound = {"cur0": Arg(plan.name, "cur")}
        else:
            bound = _event_args(main, srcs)
        args = tuple(bound.get(a, Arg(plan.name, a)) for a in main.arg_names())
        program.append(KernelCall(layer=plan.name, kernel=main, args=args))
    return program


@dataclass(frozen=True, kw_only=True)
class StepKernel:
    """A generated function ``name(steps, *buffers, *scalars)`` that runs ``calls`` in order,
    ``steps`` times.  ``params`` are the distinct runtime values it takes after ``steps``, in
    order of first use.

    A kernel called twice (two layers of one shape) is called the second time through an alias
    of its entry point (:meth:`symbols`, :meth:`aliases`; the library defines the aliases when
    it links): TVM 0.27's LLVM code generation declares an entry point once per call in one
    module, and the second declaration of one name gets a renamed, undefined symbol
    (``__tvm_ffi_<name>.184``).

    ``chunks`` (only to re-derive the names of files written before ``step_kernel_params``):
    those split such calls into chunks without repeats, each its own step kernel (object file),
    and this one looped over the chunks, calling each with ``steps = 1``; densenet121 had 55
    chunks per batch variant, 110 more functions to build."""

    calls: tuple[KernelCall, ...]
    batch: int | None
    device: Device = Device.CPU
    chunks: tuple[StepKernel, ...] = ()
    block: int = 0  # layer-major: the most steps of a block (``steps`` ≤ block); 0: step-major
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.device is not Device.CPU:
            raise TargetError("step kernels are generated for the CPU only")
        if not self.calls:
            raise TargetError("a step kernel needs at least one call")
        if self.block and (self.batch != 1 or self.chunks):
            raise TargetError("layer-major step kernels are generated for batch 1, without chunks")
        if not self.name:
            key = (self.calls, self.batch, self.chunks) + ((self.block,) if self.block else ())
            digest = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
            object.__setattr__(self, "name", f"snnc_step_{digest}")

    @classmethod
    def of(cls, calls: tuple[KernelCall, ...], batch: int | None, chunked: bool = False) -> StepKernel:
        """The step kernel of ``calls``; ``chunked``: as files written before
        ``step_kernel_params`` had it, calling chunks without repeats where a kernel would be
        called twice."""
        if not chunked:
            return cls(calls=calls, batch=batch)
        chunks: list[list[KernelCall]] = [[]]
        for call in calls:
            if any(c.kernel.name == call.kernel.name for c in chunks[-1]):
                chunks.append([])
            chunks[-1].append(call)
        if len(chunks) == 1:
            return cls(calls=calls, batch=batch)
        parts = tuple(cls(calls=tuple(c), batch=batch) for c in chunks)
        return cls(calls=calls, batch=batch, chunks=parts)

    def compiled(self) -> list[StepKernel]:
        """The functions to compile and link: the chunks, then this one."""
        return [*self.chunks, self]

    def symbols(self) -> tuple[str, ...]:
        """The packed entry point each call goes through: ``__tvm_ffi_<kernel>`` for a kernel's
        first call here, ``__tvm_ffi_<kernel>__<k>`` for its k-th repeat (an alias)."""
        seen: dict[str, int] = {}
        out = []
        for call in self.calls:
            k = seen[call.kernel.name] = seen.get(call.kernel.name, -1) + 1
            out.append(f"__tvm_ffi_{call.kernel.name}" + (f"__{k}" if k else ""))
        return tuple(out)

    def aliases(self) -> dict[str, str]:
        """The aliases its calls need, each mapped to the entry point it stands for (the
        library links each as another name of that symbol); none with chunks (no repeats)."""
        if self.chunks:
            return {}
        entries = (f"__tvm_ffi_{c.kernel.name}" for c in self.calls)
        return {s: e for s, e in zip(self.symbols(), entries, strict=True) if s != e}

    @property
    def params(self) -> tuple[Arg, ...]:
        return tuple(dict.fromkeys(a for c in self.calls for a in c.args))

    def _declarations(self) -> dict[Arg, tuple[tuple[str, ...], str]]:
        """Each value's shape expressions and dtype as its callees declare them (checked equal
        across callees: a mismatch is a planning bug that the callee would reject anyway).  A
        kernel over a block of steps declares a per-step buffer ``[B, row]``: only its row is
        compared (with the padded size of a one-step callee's shape); where no one-step callee
        takes the value, its declaration is that row."""
        decls: dict[Arg, tuple[tuple[str, ...], str]] = {}
        rows: dict[Arg, tuple[tuple[str, ...], str, str]] = {}  # per-step values of block callees
        for call in self.calls:
            shapes = call.kernel.arg_shapes()
            for name, arg in zip(call.kernel.arg_names(), call.args, strict=True):
                decl = shapes.get(name) or ((), call.kernel.precision.acc_dtype)  # a scalar
                if call.kernel.steps and self.per_step(arg):
                    rows.setdefault(arg, ((decl[0][1],), decl[1], call.kernel.name))
                    continue
                if decls.setdefault(arg, decl) != decl:
                    raise TargetError(
                        f"step kernel: {arg.layer}.{arg.role} is {decls[arg]} for one kernel and "
                        f"{decl} for {call.kernel.name}"
                    )
        for arg, (row, dtype, name) in rows.items():
            decls.setdefault(arg, (row, dtype))
            if self.block_shape(arg, decls)[1] != int(row[0]) or decls[arg][1] != dtype:
                raise TargetError(
                    f"step kernel: {arg.layer}.{arg.role} is {decls[arg]} for one kernel and rows of "
                    f"{row[0]} {dtype} for {name}"
                )
        return decls

    def per_step(self, arg: Arg) -> bool:
        """Whether ``arg`` has one slice per step of a block (layer-major only)."""
        return bool(self.block) and arg.role in PER_STEP_ROLES

    def block_shape(self, arg: Arg, decls: dict | None = None) -> tuple[int, int]:
        """A per-step buffer's shape in a layer-major step kernel: ``[block, row]``, step k's
        slice the callee's shape flattened into row k, the row padded to 64 bytes (the kernels
        assume 64-byte aligned buffers: a vector load of a slice at another offset faults)."""
        dims, dtype = (decls or self._declarations())[arg]
        return self.block, padded_row(math.prod(int(d) for d in dims), dtype)

    def source(self) -> str:
        """The TVMScript of the step kernel (a ``@T.prim_func`` without imports)."""
        decls = self._declarations()
        names = {arg: f"a{i}" for i, arg in enumerate(self.params)}
        sig = ["steps: T.int32"]
        for arg, var in names.items():
            dims, dtype = decls[arg]
            sig.append(f"{var}: T.{dtype}" if not dims else f"{var}_h: T.handle")
        if self.block:
            return self._layer_major_source(decls, names, sig)
        lines = [
            "@T.prim_func",
            f"def {self.name}({', '.join(sig)}):",
            f'    T.func_attr({{"global_symbol": "{self.name}"}})',
        ]
        if self.batch is None:
            lines.append("    B = T.int32()")
        for arg, var in names.items():
            dims, dtype = decls[arg]
            if dims:
                lines.append(f'    {var} = T.match_buffer({var}_h, ({", ".join(dims)},), "{dtype}")')
        lines.append("    for t in range(steps):")
        # each callee's packed entry point in this same library: the return code is checked by
        # the lowering, so a failing kernel stops the loop with its error
        if self.chunks:
            for chunk in self.chunks:
                operands = ", ".join(["1", *(names[a] for a in chunk.params)])
                lines.append(f'        T.evaluate(T.call_cpacked("__tvm_ffi_{chunk.name}", {operands}))')
        else:
            for call, symbol in zip(self.calls, self.symbols(), strict=True):
                operands = ", ".join(names[a] for a in call.args)
                lines.append(f'        T.evaluate(T.call_cpacked("{symbol}", {operands}))')
        return "\n".join(lines) + "\n"

    def _layer_major_source(self, decls: dict, names: dict[Arg, str], sig: list[str]) -> str:
        """Each call for steps 0 .. ``steps`` - 1 of a block, then the next call; a per-step
        buffer is ``[block, *dims]`` and each call gets its step's slice as a tensor of the
        callee's shape (a DLTensor made on the stack: no copy)."""
        lines = [
            "@T.prim_func",
            f"def {self.name}({', '.join(sig)}):",
            f'    T.func_attr({{"global_symbol": "{self.name}"}})',
        ]
        for arg, var in names.items():
            dims, dtype = decls[arg]
            if dims:
                if self.per_step(arg):
                    dims = tuple(str(n) for n in self.block_shape(arg, decls))
                lines.append(f'    {var} = T.match_buffer({var}_h, ({", ".join(dims)},), "{dtype}")')

        null = 'T.reinterpret("handle", T.uint64(0))'  # no strides: compact

        def operand(arg: Arg) -> str:
            if not self.per_step(arg):
                return names[arg]
            dims, dtype = decls[arg]
            shape = f"T.tvm_stack_make_shape({', '.join(dims)})"
            return f"T.tvm_stack_make_array(T.address_of({names[arg]}[k, 0]), {shape}, {null}, {len(dims)}, T.{dtype}(0), 0)"

        def rows(arg: Arg) -> str:  # the block's first ``steps`` rows, for a kernel over them
            if not self.per_step(arg):
                return names[arg]
            _, row = self.block_shape(arg, decls)
            shape = f"T.tvm_stack_make_shape(steps, {row})"
            return f"T.tvm_stack_make_array(T.address_of({names[arg]}[0, 0]), {shape}, {null}, 2, T.{decls[arg][1]}(0), 0)"

        for call, symbol in zip(self.calls, self.symbols(), strict=True):
            if call.kernel.steps:
                operands = ", ".join(rows(a) for a in call.args)
                lines.append(f'    T.evaluate(T.call_cpacked("{symbol}", {operands}))')
                continue
            lines.append("    for k in range(steps):")
            operands = ", ".join(operand(a) for a in call.args)
            lines.append(f'        T.evaluate(T.call_cpacked("{symbol}", {operands}))')
        return "\n".join(lines) + "\n"

    def prim_func(self):
        """Parse :meth:`source` into a ``tvm.tirx.PrimFunc`` (imports TVM)."""
        from tvm.script import parser
        from tvm.script import tirx as T

        return parser.parse(self.source(), extra_vars={"T": T})


# The most distinct buffers (and scalars) one step kernel takes.  TVM lowers a generated
# function's parameters into nested bindings, and its passes (MakePackedAPI, LowerIntrin) and
# LLVM's code generation grow faster than linearly with them (one step kernel, CPU time of parse +
# build + object file, load 3: 202 params 0.7 s, 802 params 3.4 s, 1,602 params 10.8 s,
# densenet121's 2,230 params ~35 s per batch variant); cut at 512, a large network's step kernels
# build in time linear in its size, and a network of up to 512 buffers (resnet18: 191) keeps one
# step kernel and one call for all T steps.
MAX_STEP_PARAMS = 512


def _split(run: list[KernelCall], max_params: int | None) -> list[tuple[KernelCall, ...]]:
    """``run`` cut, in order, into the longest pieces whose calls take at most ``max_params``
    distinct values (None: no limit); a call that alone takes more is a piece of its own."""
    pieces: list[tuple[KernelCall, ...]] = []
    piece: list[KernelCall] = []
    values: set[Arg] = set()
    for call in run:
        grown = values | set(call.args)
        if piece and max_params is not None and len(grown) > max_params:
            pieces.append(tuple(piece))
            piece, grown = [], set(call.args)
        piece.append(call)
        values = grown
    if piece:
        pieces.append(tuple(piece))
    return pieces


def fuse(
    program: list[KernelCall | HostCall], batch: int | None, max_params: int | None = MAX_STEP_PARAMS
) -> list[StepKernel | HostCall]:
    """Each maximal run of kernel calls of ``program`` as step kernels, in order: one per run,
    or, where a run takes more than ``max_params`` values, one per piece of at most
    ``max_params`` (:func:`_split`); host calls stay.  ``max_params`` None: the step kernels of
    files written before the limit (one per run, chunked where a kernel is called twice)."""
    out: list[StepKernel | HostCall] = []
    run: list[KernelCall] = []
    for item in [*program, None]:  # None: the end flushes the last run
        if isinstance(item, KernelCall):
            run.append(item)
            continue
        out += [StepKernel.of(piece, batch, chunked=max_params is None) for piece in _split(run, max_params)]
        run = []
        if item is not None:
            out.append(item)
    return out


def step_kernels(
    plans: list[LayerPlan], device: Device, max_params: int | None = MAX_STEP_PARAMS
) -> dict[int | None, list[StepKernel | HostCall]]:
    """The fused timestep of every batch variant (None: any batch; 1), empty off the CPU; step
    kernels take at most ``max_params`` values each (None: as files written before the limit
    have them, see :func:`fuse`)."""
    if device is not Device.CPU:
        return {}
    return {batch: fuse(step_program(plans, batch), batch, max_params) for batch in (None, 1)}


def layer_major_step_kernels(
    plans: list[LayerPlan], device: Device, max_params: int = MAX_STEP_PARAMS, block: int = LAYER_MAJOR_STEPS
) -> list[StepKernel]:
    """The batch-1 step in layer-major step kernels of ``block`` steps (cut as :func:`fuse` cuts
    step-major ones); none off the CPU or where the step has a host call (a BLAS product between
    kernel calls: the runtime then orders the per-kernel calls itself)."""
    if device is not Device.CPU:
        return []
    program = step_program(plans, 1)
    calls = [c for c in program if isinstance(c, KernelCall)]
    if len(calls) != len(program) or not calls:
        return []
    over_block = {p.name: p.block for p in plans if p.block is not None}
    calls = [_over_block(c, over_block[c.layer]) if c.layer in over_block else c for c in calls]
    return [StepKernel(calls=piece, batch=1, block=block) for piece in _split(calls, max_params)]


def _over_block(call: KernelCall, kernel: LayerKernel) -> KernelCall:
    """A layer's call as the call of its kernel over a block of steps (mode BLOCK): the same
    values, the weight in the tiled layout (role ``tiled_weight``)."""
    if kernel.arg_names() != call.kernel.arg_names():
        raise TargetError(f"layer '{call.layer}': its kernel over a block of steps takes other arguments")
    args = tuple(Arg(a.layer, "tiled_weight") if a.role == "weight" else a for a in call.args)
    return KernelCall(layer=call.layer, kernel=kernel, args=args)


def weight_bytes(weights: list) -> int:
    """The bytes of the layers' weights (numpy arrays): what the layer-major rule goes by."""
    return sum(int(w.nbytes) for w in weights)

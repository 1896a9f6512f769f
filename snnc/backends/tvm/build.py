"""Compile a layer graph into a TVM event artifact (``format.md``): ``lib.so`` (every kernel
of the plan, through :mod:`kernel_cache`), ``graph.json`` (the checked layer graph, the modes
as they run, parameter and kernel names) and ``params.safetensors`` (kernel layouts and dtypes)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from snnc.backends.tvm import kernel_cache
from snnc.backends.tvm import steps as step_rules  # its LAYER_MAJOR_* constants, read when used
from snnc.backends.tvm.kernels import INT16_SUM_BOUND, Device, LayerKernel, Precision, largest_step_sum
from snnc.backends.tvm.layers import Artifact, LayerFiles, LayerGraph, LayerOp, LayerSpec, parse_layer_graph
from snnc.backends.tvm.plan import LayerPlan, Value, ValueKind, plan_graph
from snnc.backends.tvm.steps import (
    MAX_STEP_PARAMS,
    StepKernel,
    layer_major_step_kernels,
    step_kernels,
    weight_bytes,
)
from snnc.errors import TargetError, UnsupportedError

LIB, GRAPH, PARAMS = "lib.so", "graph.json", "params.safetensors"
DECAY_BITS = 12  # int8 path: beta as a 12-bit fixed-point decay (Loihi's convention)


def compile_artifact(
    layer_graph: LayerGraph | Mapping[str, Any],
    params: Mapping[str, np.ndarray],
    out_dir: str | Path,
    target: str = "llvm",
    *,
    max_step_params: int = MAX_STEP_PARAMS,
) -> Path:
    """Compile a layer graph (a :class:`LayerGraph`, or the dict form of ``format.md``, checked
    here against the parameters; parameters in PyTorch layouts) into an artifact directory
    ``out_dir`` (created if needed): ``lib.so``, ``graph.json``, ``params.safetensors``.
    ``target`` is ``"llvm"`` (this CPU) or ``"cuda"``; ``max_step_params``: the most buffers one
    generated step kernel takes (``steps.MAX_STEP_PARAMS``; tests make it small to split small
    networks), written to ``graph.json`` for the runtime.  Returns ``out_dir``."""
    if max_step_params < 1:
        raise TargetError(f"max_step_params must be at least 1, got {max_step_params}")
    try:
        device = Device(target)
    except ValueError:
        raise TargetError(f"unknown TVM target '{target}'; expected 'llvm' or 'cuda'") from None
    if not isinstance(layer_graph, LayerGraph):
        layer_graph = parse_layer_graph(layer_graph, {k: tuple(np.shape(v)) for k, v in params.items()})
    plans = plan_graph(layer_graph, device)
    arrays, names = kernel_params(plans, params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fused = step_kernels(plans, device, max_step_params)
    step_names = {
        key: tuple(k.name for k in fused[batch] if isinstance(k, StepKernel))
        for key, batch in (("any_batch", None), ("batch1", 1))
        if batch in fused
    }
    # layer-major batch-1 step kernels where the runtime will choose that order (runtime.py)
    weights = [arrays[n["weight"]] for n, _ in names.values() if "weight" in n]
    layer_major: list[StepKernel] = []
    if weight_bytes(weights) > step_rules.LAYER_MAJOR_MIN_WEIGHT_BYTES:
        layer_major = layer_major_step_kernels(plans, device, max_step_params, step_rules.LAYER_MAJOR_STEPS)
    if layer_major:
        step_names["batch1_layer_major"] = tuple(k.name for k in layer_major)
    compiled: list[LayerKernel | StepKernel] = [k for p in plans for k in p.kernels()]
    compiled += [c for items in fused.values() for k in items if isinstance(k, StepKernel) for c in k.compiled()]
    compiled += layer_major
    # the kernels over a block of steps, only where layer-major step kernels call them
    blocks = {p.name: p.block for p in plans if p.block is not None} if layer_major else {}
    compiled += list(blocks.values())
    kernel_cache.export_library(compiled, out / LIB)
    files = {}
    for plan in plans:
        if plan.main:
            param_names, source = names[plan.name]
            files[plan.name] = LayerFiles(
                params=param_names,
                source=source,
                any_batch=tuple(k.name for k in (plan.densify.get(None), plan.main[None]) if k is not None),
                batch1=tuple(
                    k.name for k in (plan.densify.get(1), plan.main.get(1), blocks.get(plan.name)) if k is not None
                ),
            )
    ran = LayerGraph(
        name=layer_graph.name,
        timesteps=layer_graph.timesteps,
        input=layer_graph.input,
        layers=tuple(p.layer for p in plans),  # the modes as the runtime runs them
    )
    save_file(arrays, str(out / PARAMS))
    limit = max_step_params if step_names else None
    Artifact(
        graph=ran, target=device, files=files, step_kernels=step_names, step_kernel_params=limit,
        layer_major_steps=step_rules.LAYER_MAJOR_STEPS if layer_major else 0,
    ).write(out / GRAPH)  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------
# parameters: source (PyTorch) layouts -> kernel layouts


def _exact_int(a: np.ndarray, lo: int, hi: int, what: str) -> np.ndarray:
    a = np.asarray(a)
    r = np.rint(a)
    if not np.array_equal(r, a) or (r.size and (r.min() < lo or r.max() > hi)):
        raise UnsupportedError(f"{what} must hold integers in [{lo}, {hi}] for the int8 path")
    return r


def _per_channel(value: float | str, params: Mapping[str, np.ndarray], channels: int) -> np.ndarray:
    arr = np.asarray(params[value] if isinstance(value, str) else value, dtype=np.float64).reshape(-1)
    return np.broadcast_to(arr, (channels,)).copy()


def kernel_params(
    plans: list[LayerPlan], params: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, tuple[dict[str, str], dict[str, str]]]]:
    """Weights and neuron parameters of every layer in kernel layout and dtype, and per layer
    (role -> artifact name, role -> source name)."""
    out: dict[str, np.ndarray] = {}
    names_of: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for plan in plans:
        layer, name = plan.layer, plan.name
        if layer.op is LayerOp.FLATTEN:
            continue
        integer = layer.precision is Precision.INT8
        adt = np.int32 if integer else np.float32
        names: dict[str, str] = {}
        source: dict[str, str] = {}
        channels = layer.channels
        if layer.weight is not None:
            w = np.asarray(params[layer.weight], dtype=np.float64)
            if layer.int16_sums:
                _check_int16_sums(layer, w, params)
            x = plan.inputs[0]
            if layer.op is LayerOp.LINEAR:
                w = w.T  # [n_in, n_out]
                if x.hwc is not None:  # rows follow the producer's channels-last neuron order
                    h, wd, c = x.hwc
                    w = w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(h * wd * c, -1)
            else:  # [Cin, KH, KW, Cout/groups]: input channel ci's row of its group's outputs
                groups = layer.geometry.groups
                co, ci_g, kh, kw = w.shape
                w = w.reshape(groups, co // groups, ci_g, kh, kw).transpose(0, 2, 3, 4, 1)
                w = w.reshape(groups * ci_g, kh, kw, co // groups)
            if integer:
                w = _exact_int(w, -128, 127, f"layer '{name}': weight")
            out[f"{name}.weight"] = np.ascontiguousarray(w.astype(np.int8 if integer else np.float32))
            names["weight"], source["weight"] = f"{name}.weight", layer.weight
            if layer.bias is not None:
                b = np.asarray(params[layer.bias], dtype=np.float64).reshape(-1)
                if integer:
                    b = _exact_int(b, -(2**31), 2**31 - 1, f"layer '{name}': bias")
                out[f"{name}.bias"] = b.astype(adt)
                names["bias"], source["bias"] = f"{name}.bias", layer.bias
        if layer.op is LayerOp.REMAP:
            _remap_params(plan, params, out, names, source)
        nrn = layer.neuron
        if nrn is not None:
            vth = _per_channel(nrn.v_th, params, channels)
            if np.any(vth <= 0):
                raise TargetError(f"layer '{name}': v_th must be > 0")
            beta = _per_channel(nrn.beta, params, channels)
            v0 = nrn.v_init * vth
            if integer:
                vth = _exact_int(vth, 1, 2**31 - 1, f"layer '{name}': v_th")
                decay = beta * (1 << DECAY_BITS)
                beta = _exact_int(decay, 0, 1 << DECAY_BITS, f"layer '{name}': beta·4096")
                v0 = _exact_int(v0, -(2**31), 2**31 - 1, f"layer '{name}': v_init·v_th")
                _exact_int(np.array([nrn.v_reset]), -(2**31), 2**31 - 1, f"layer '{name}': v_reset")
            out[f"{name}.v_th"] = vth.astype(adt)
            out[f"{name}.beta"] = beta.astype(adt)
            out[f"{name}.v_init"] = v0.astype(adt)
            names |= {"v_th": f"{name}.v_th", "beta": f"{name}.beta", "v_init": f"{name}.v_init"}
            for role, value in (("v_th", nrn.v_th), ("beta", nrn.beta)):
                if isinstance(value, str):
                    source[role] = value
        names_of[name] = (names, source)
    return out, names_of


def _check_int16_sums(layer: LayerSpec, w: np.ndarray, params: Mapping[str, np.ndarray]) -> None:
    """Refuse a layer marked ``int16_sums`` whose weights (PyTorch layout, output channels
    first) and bias can sum beyond int16 in one step: its kernels would overflow."""
    largest = largest_step_sum(w, None if layer.bias is None else np.asarray(params[layer.bias]))
    if largest > INT16_SUM_BOUND:
        raise TargetError(
            f"layer '{layer.name}': int16_sums is set, but its |bias| + sum of |weights| reaches "
            f"{largest:g} > {INT16_SUM_BOUND}; remove int16_sums (the IR lowering sets it only where it holds)"
        )


def runtime_order(v: Value) -> np.ndarray:
    """For each element of ``v`` in PyTorch's C order, its index in the runtime's order
    (channels-last for feature maps, format.md "Runtime layouts")."""
    if v.hwc is None:
        return np.arange(v.n)
    h, w, c = v.hwc
    return np.arange(v.n).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)


def _remap_params(
    plan: LayerPlan, params: Mapping[str, np.ndarray], out: dict[str, np.ndarray], names: dict, source: dict
) -> None:
    """A remap layer's maps in runtime order (``map{i}``), its multipliers with the inputs'
    output scales folded in (``mul{i}``, when its kernel multiplies) and its bias."""
    layer, name = plan.layer, plan.name
    multiply = plan.main[None].multiplier
    out_order = runtime_order(plan.output)
    adt = np.int32 if layer.precision is Precision.INT8 else np.float32
    for i, (value, map_name) in enumerate(zip(plan.inputs, layer.maps, strict=True)):
        m = np.asarray(params[map_name]).reshape(-1).astype(np.int64)
        if m.size != value.n or m.min(initial=0) < -1 or m.max(initial=-1) >= plan.output.n:
            raise TargetError(f"layer '{name}': map '{map_name}' is not a map of {value.n} inputs into {plan.output.n}")
        rt = np.full(value.n, -1, np.int32)
        rt[runtime_order(value)] = np.where(m >= 0, out_order[np.maximum(m, 0)], -1)
        out[f"{name}.map{i}"] = rt
        names[f"map{i}"], source[f"map{i}"] = f"{name}.map{i}", map_name
        if multiply:
            mul = np.ones(value.n)
            if layer.multipliers:
                mul = np.asarray(params[layer.multipliers[i]], dtype=np.float64).reshape(-1)
                source[f"mul{i}"] = layer.multipliers[i]
            if value.kind is ValueKind.EVENTS:
                mul = mul * value.scale
            if layer.precision is Precision.INT8:
                mul = _exact_int(mul, -(2**31), 2**31 - 1, f"layer '{name}': multiplier")
            rt_mul = np.zeros(value.n)
            rt_mul[runtime_order(value)] = mul
            out[f"{name}.mul{i}"] = rt_mul.astype(adt)
            names[f"mul{i}"] = f"{name}.mul{i}"
    if layer.bias is not None:
        b = np.asarray(params[layer.bias], dtype=np.float64).reshape(-1)
        if layer.precision is Precision.INT8:
            b = _exact_int(b, -(2**31), 2**31 - 1, f"layer '{name}': bias")
        out[f"{name}.bias"] = b.astype(adt)
        names["bias"], source["bias"] = f"{name}.bias", layer.bias

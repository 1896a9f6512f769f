"""lava-dl netx HDF5 (``network.net``): write a quantised layer list, and read one back with plain h5py.

Layout (lava-dl ``slayer.block.*.export_hdf5``, read by ``lava.lib.dl.netx.hdf5.Network``; there are no
HDF5 attributes, everything is a dataset)::

    /layer/<i>/type          bytes S10, shape (1,)       input | dense | conv | flatten
    /layer/<i>/shape         int64 [C, H, W] (or (N,) for dense; [N, 1, 1] for flatten)
    /layer/<i>/weight        float32, integer-valued     dense (N_out, N_in); conv (C_out, C_in/g, kH, kW)
    /layer/<i>/bias          float32                     optional: dense (N,), conv (C,) or (W, H, C)
    /layer/<i>/inFeatures, outFeatures                   int64 scalars (dense)
    /layer/<i>/inChannels, outChannels, groups           int64 scalars (conv)
    /layer/<i>/kernelSize, stride, padding, dilation     int64 (2,), ordered [H, W]
    /layer/<i>/neuron/type   variable-length str 'CUBA'
    /layer/<i>/neuron/iDecay, vDecay, vThMant, refDelay  int64 scalars;  neuron/gradedSpike  bool
    /simulation/Ts, tSample  int64 scalars (optional)

Conventions netx applies when it loads the file, and how this module accounts for them:
  * neurons: ``LIF(vth=vThMant, du=iDecay - 1, dv=vDecay, bias_mant=int32(bias), bias_exp=6)``; so
    ``iDecay = du + 1`` and the stored bias is the mantissa for exponent 6; ``refDelay`` is ignored.
  * dense weights go through netx ``optimize_weight_bits``: shifted left by ``s`` bits with
    ``weight_exp = -s`` and ``num_weight_bits`` chosen from the data; :func:`read_netx` applies the same
    rewrite, so simulating what it returns is simulating what Lava runs (exact for [-256, 254]).
  * conv: netx flips the kernel (``weight[:, :, ::-1, ::-1]``) and transposes it to lava's (C_out, W, H,
    C_in) convolution over (x, y, c) = (W, H, C) tensors; flip and convolution cancel, so the stored
    kernel is PyTorch's cross-correlation kernel in (C_out, C_in, H, W), as written here.
    ``stride``/``padding``/``dilation`` are stored [H, W] and reversed to (x, y) by netx.
  * shapes are stored [C, H, W] and reversed by netx to (x, y, z) = WHC; a flatten before a dense
    transposes back (``transpose([2, 1, 0]).flatten()``), i.e. PyTorch's CHW flattening.
  * the input layer is written with its shape only (no neuron group): netx then feeds the spikes
    straight into the first synapse, which is what :mod:`bitacc` simulates.
  * netx has no pool layer (``NotImplementedError``); a sum pool is written as the conv it is: groups =
    channels, every kernel weight equal to the pool weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from snnc.errors import InputFileError, UnsupportedError

from .bitacc import LayerKind, LifParams, QLayer, pool_weight_tensor, prepare_dense_weights, verify_layers
from .fixed_point import NETX_BIAS_EXP, netx_weight_format

NETX_WEIGHT_MIN, NETX_WEIGHT_MAX = -256, 254


def _h5py():
    import h5py  # imported here: `import snnc` must not pull h5py in

    return h5py


def _netx_bias(layer: QLayer) -> np.ndarray | None:
    """The layer's bias as netx stores it (mantissa for exponent 6), or None when it is zero."""
    lif = layer.lif_params
    mant = np.broadcast_to(np.asarray(lif.bias_mant, dtype=np.int64), layer.shape)
    if not mant.any():
        return None
    shift = int(lif.bias_exp) - NETX_BIAS_EXP
    stored = mant << shift if shift >= 0 else mant >> -shift
    lost = (stored << -shift if shift < 0 else stored >> shift) != mant
    if np.any(lost) or stored.min() < -4096 or stored.max() > 4095:
        raise UnsupportedError(
            f"layer '{layer.name}': its bias (mantissa << {lif.bias_exp}) has no exact 13-bit mantissa for "
            f"netx's fixed bias exponent 6; quantise the bias with bias_exp=6"
        )
    return stored


def _write_neuron(group, lif: LifParams) -> None:
    group.create_dataset("neuron/type", data="CUBA")
    group.create_dataset("neuron/iDecay", data=np.int64(int(lif.du) + 1))
    group.create_dataset("neuron/vDecay", data=np.int64(lif.dv))
    group.create_dataset("neuron/vThMant", data=np.int64(lif.vth_mant))
    group.create_dataset("neuron/refDelay", data=np.int64(1))
    group.create_dataset("neuron/gradedSpike", data=np.bool_(False))


def _type(group, name: str) -> None:
    group.create_dataset("type", (1,), "S10", [name.encode("ascii")])


def _check_netx_expressible(layers: Sequence[QLayer]) -> None:
    # the wiring first (what makes a network not a chain is the more useful reason), then each layer's format
    for i, layer in enumerate(layers):
        if layer.kind in (LayerKind.ADD, LayerKind.CONCAT):
            what = "a residual add" if layer.kind is LayerKind.ADD else "a concatenation"
            raise UnsupportedError(
                f"layer '{layer.name}' is {what}, which the lava-dl netx format cannot express (netx networks are "
                "a chain of layers); the core mapping, the bit-accurate simulation and the NIR export still work"
            )
        members = [k for k, g in zip(layer.inputs, (layer, *layer.extra), strict=False) if not g.exp_class]
        if len(members) > 1:
            reads = ", ".join(f"'{layers[k].name}'" for k in members)
            raise UnsupportedError(
                f"layer '{layer.name}' sums {len(members)} synapse groups (from {reads}): a residual join, "
                "which the lava-dl netx format cannot express (netx connects each layer to the one before it only)"
            )
        if layer.inputs and set(layer.inputs) != {i - 1}:
            raise UnsupportedError(
                f"layer '{layer.name}' reads layer(s) {layer.inputs}, not the one before it; netx networks are a chain"
            )
    for layer in layers:
        if any(g.exp_class for g in layer.extra):
            exps = sorted({g.weight_exp for g in (layer, *layer.extra)})
            raise UnsupportedError(
                f"layer '{layer.name}' has per-channel weight exponents {exps} (one synapse group each), which the "
                "lava-dl netx format cannot express (one weight exponent per layer); quantise with "
                "loihi-quantize{channel-exponents=0} for a netx file"
            )
        if layer.kind is LayerKind.CONV and layer.weight_exp != 0:
            raise UnsupportedError(
                f"layer '{layer.name}': a conv weight exponent ({layer.weight_exp}) is not in the netx format; "
                "quantise with loihi-quantize{channel-exponents=0} for a netx file"
            )
        if layer.kind is LayerKind.DENSE:
            w = np.asarray(layer.weight)
            if layer.weight_exp != 0:
                raise UnsupportedError(
                    f"layer '{layer.name}': netx derives the weight exponent itself; quantise with weight_exp=0"
                )
            if w.min(initial=0) < NETX_WEIGHT_MIN or w.max(initial=0) > NETX_WEIGHT_MAX:
                raise UnsupportedError(f"layer '{layer.name}': netx weights must lie in [-256, 254]")
            if not np.array_equal(prepare_dense_weights(w, layer.num_weight_bits), w):
                raise UnsupportedError(
                    f"layer '{layer.name}': weights carry bits a {layer.num_weight_bits}-bit synapse drops (8 bits: "
                    "even integers); netx would keep them, so the file would not run as simulated"
                )
        if layer.kind is LayerKind.INPUT and layer.message_bits:
            raise UnsupportedError(
                f"layer '{layer.name}': graded input is a netx Network() argument (input_message_bits), not part "
                "of the file; write the network for binary input spikes"
            )


def write_netx(path: str | Path, layers: Sequence[QLayer], timesteps: int | None = None) -> None:
    """Write ``layers`` to ``path`` in the lava-dl netx layout (see the module docstring).

    Raises UnsupportedError, naming the layer, for what netx cannot express (residual add, concat,
    non-chain wiring, a dense weight exponent, a bias without an exact exponent-6 mantissa).
    """
    verify_layers(layers)
    _check_netx_expressible(layers)
    h5py = _h5py()
    with h5py.File(path, "w") as f:
        top = f.create_group("layer")
        prev_shape: tuple[int, ...] = ()
        for i, layer in enumerate(layers):
            g = top.create_group(str(i))
            kind = layer.kind
            if kind is LayerKind.INPUT:
                _type(g, "input")
                g.create_dataset("shape", data=np.array(layer.shape, dtype=np.int64))
            elif kind is LayerKind.FLATTEN:
                _type(g, "flatten")
                g.create_dataset("shape", data=np.array([layer.shape[0], 1, 1], dtype=np.int64))
            elif kind is LayerKind.DENSE:
                w = np.asarray(layer.weight)
                _type(g, "dense")
                g.create_dataset("shape", data=np.array(layer.shape, dtype=np.int64))
                g.create_dataset("inFeatures", data=np.int64(w.shape[1]))
                g.create_dataset("outFeatures", data=np.int64(w.shape[0]))
                g.create_dataset("weight", data=w.astype(np.float32))
                bias = _netx_bias(layer)
                if bias is not None:
                    g.create_dataset("bias", data=bias.astype(np.float32))
                _write_neuron(g, layer.lif_params)
            else:  # CONV, or POOL written as the depthwise conv it is
                if kind is LayerKind.CONV:
                    w, groups = np.asarray(layer.weight), layer.groups
                else:
                    w, groups = (
                        pool_weight_tensor(prev_shape[0], layer.kernel, int(layer.weight_array)),
                        prev_shape[0],
                    )
                _type(g, "conv")
                g.create_dataset("shape", data=np.array(layer.shape, dtype=np.int64))
                g.create_dataset("inChannels", data=np.int64(prev_shape[0]))
                g.create_dataset("outChannels", data=np.int64(layer.shape[0]))
                g.create_dataset("kernelSize", data=np.array(w.shape[2:], dtype=np.int64))
                g.create_dataset("stride", data=np.array(layer.stride, dtype=np.int64))
                g.create_dataset("padding", data=np.array(layer.padding, dtype=np.int64))
                g.create_dataset("dilation", data=np.array(layer.dilation, dtype=np.int64))
                g.create_dataset("groups", data=np.int64(groups))
                g.create_dataset("weight", data=w.astype(np.float32))
                bias = _netx_bias(layer)
                if bias is not None:
                    per_channel = bias[:, :1, :1]
                    if np.all(bias == per_channel):
                        g.create_dataset("bias", data=per_channel.reshape(-1).astype(np.float32))
                    else:  # neuron-wise, in netx's (x, y, c) shape
                        g.create_dataset("bias", data=bias.transpose(2, 1, 0).astype(np.float32))
                _write_neuron(g, layer.lif_params)
            prev_shape = tuple(layer.shape)
        if timesteps is not None:
            f.create_dataset("simulation/Ts", data=np.int64(1))
            f.create_dataset("simulation/tSample", data=np.int64(timesteps))


def _integers(data: np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(data)
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise InputFileError(f"{where}: weights are not integer-valued")
    return arr.astype(np.int64)


def _pair(g, key: str, default: int) -> tuple[int, int]:
    if key not in g:
        return default, default
    v = np.asarray(g[key][()]).reshape(-1)
    return (int(v[0]), int(v[0])) if v.size == 1 else (int(v[0]), int(v[1]))


def _read_lif(g, shape: tuple[int, ...], where: str) -> LifParams:
    n = g["neuron"]
    kind = n["type"][()]
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind not in ("CUBA", "LOIHI"):
        raise UnsupportedError(f"{where}: neuron type '{kind}' is not a CUBA LIF")
    bias = np.zeros((1,) * len(shape), dtype=np.int64)
    if "bias" in g:
        # netx: bias_mant = bias.astype(int32), i.e. truncation toward zero
        raw = np.asarray(g["bias"][()]).astype(np.int32).astype(np.int64)
        if len(shape) == 1:
            bias = raw.reshape(-1) if raw.size > 1 else raw.reshape(1)
        elif raw.ndim == 1 and raw.size == shape[0]:
            bias = raw.reshape(-1, 1, 1)
        elif raw.ndim == 3 and raw.shape == (shape[2], shape[1], shape[0]):
            bias = raw.transpose(2, 1, 0)
        else:
            raise InputFileError(
                f"{where}: bias of shape {raw.shape} fits neither channels nor neurons of {shape}"
            )
    return LifParams(
        du=int(n["iDecay"][()]) - 1,
        dv=int(n["vDecay"][()]),
        vth_mant=int(n["vThMant"][()]),
        bias_mant=bias,
        bias_exp=NETX_BIAS_EXP,
    )


def read_netx(path: str | Path) -> list[QLayer]:
    """Rebuild the layer list of a netx file with h5py and numpy only (no Lava), as netx would run it:
    dense weights rewritten as netx's ``optimize_weight_bits`` does, biases truncated to int32."""
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputFileError(f"cannot read netx file '{path}': {e}") from None
    layers: list[QLayer] = []
    with f:
        if "layer" not in f:
            raise InputFileError(f"'{path}' has no /layer group; it is not a netx network")
        keys = sorted(f["layer"].keys(), key=int)
        for key in keys:
            g = f["layer"][key]
            kind = g["type"][0]
            kind = (kind.decode() if isinstance(kind, bytes) else str(kind)).strip("\x00")
            where = f"{path}: layer {key} ({kind})"
            name = f"{kind}{key}"
            shape = tuple(int(s) for s in np.asarray(g["shape"][()]).reshape(-1))
            if kind == "input":
                if "neuron" in g:
                    raise UnsupportedError(
                        f"{where}: input neurons are not supported; only a shape-only input layer"
                    )
                layers.append(QLayer(name=name, kind=LayerKind.INPUT, shape=shape))
            elif kind == "flatten":
                layers.append(
                    QLayer(name=name, kind=LayerKind.FLATTEN, shape=(int(np.prod(layers[-1].shape)),))
                )
            elif kind == "dense":
                w = _integers(g["weight"][()], where)
                n_out = int(np.prod(shape))
                w = w.reshape(n_out, -1)
                bits, exp, _ = netx_weight_format(w)
                # netx shifts the (clipped) weights left by -exp and runs them with weight_exp = exp
                w = np.clip(w, NETX_WEIGHT_MIN, NETX_WEIGHT_MAX) << -exp
                lif = _read_lif(g, (n_out,), where)
                layers.append(
                    QLayer(
                        name=name,
                        kind=LayerKind.DENSE,
                        shape=(n_out,),
                        weight=w,
                        weight_exp=exp,
                        num_weight_bits=max(bits, 1),
                        lif=lif,
                    )
                )
            elif kind == "conv":
                w = _integers(g["weight"][()], where)
                w = w.reshape(w.shape[:4])
                c, h, wd = shape
                layers.append(
                    QLayer(
                        name=name,
                        kind=LayerKind.CONV,
                        shape=(c, h, wd),
                        weight=w,
                        stride=_pair(g, "stride", 1),
                        padding=_pair(g, "padding", 0),
                        dilation=_pair(g, "dilation", 1),
                        groups=int(g["groups"][()]) if "groups" in g else 1,
                        lif=_read_lif(g, (c, h, wd), where),
                    )
                )
            else:
                raise UnsupportedError(f"{where}: netx cannot load '{kind}' layers, and neither can snnc")
    verify_layers(layers)
    return layers

"""Plain numpy references for the TVM event backend tests (no TVM, no torch).

Event lists are built from dense arrays; the references compute what DESIGN.md §3 says a
layer computes, in float64 (fp32 kernels are compared with a tolerance) or exact int64.
"""

from __future__ import annotations

import numpy as np


def to_rows(dense: np.ndarray, val_dtype: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROWS event list (cnt[B], idx[B, n], val[B, n]) of the non-zeros of ``dense`` [B, ...]."""
    flat = dense.reshape(dense.shape[0], -1)
    cnt = np.count_nonzero(flat, axis=1).astype(np.int32)
    idx = np.zeros(flat.shape, np.int32)
    val = np.zeros(flat.shape, val_dtype or flat.dtype)
    for b in range(flat.shape[0]):
        nz = np.flatnonzero(flat[b])
        idx[b, : nz.size] = nz
        val[b, : nz.size] = flat[b, nz]
    return cnt, idx, val


def to_csr(dense: np.ndarray, val_dtype: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR event list (ptr[B + 1], idx[nnz], val[nnz]) of ``dense`` [B, n]."""
    b, i = np.nonzero(dense)
    ptr = np.zeros(dense.shape[0] + 1, np.int32)
    np.cumsum(np.bincount(b, minlength=dense.shape[0]), out=ptr[1:])
    return ptr, i.astype(np.int32), dense[b, i].astype(val_dtype or dense.dtype)


def to_csc(dense: np.ndarray, val_dtype: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSC event list (ptr[n + 1], bidx[nnz], val[nnz]) of ``dense`` [B, n]: samples per input."""
    ptr, bidx, val = to_csr(np.ascontiguousarray(dense.T), val_dtype)
    return ptr, bidx, val


def conv2d_hwc(x: np.ndarray, w: np.ndarray, stride, padding, dilation) -> np.ndarray:
    """Cross-correlation of channels-last x [B, H, W, Ci] with w [Ci, KH, KW, Co], in float64."""
    bsz, h, wd, _ = x.shape
    _, kh, kw, co = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.zeros((bsz, h + 2 * ph, wd + 2 * pw, x.shape[3]))
    xp[:, ph : ph + h, pw : pw + wd] = x
    out = np.zeros((bsz, oh, ow, co))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
            out += patch @ w[:, i, j, :].astype(np.float64)
    return out


def sumpool_hwc(x: np.ndarray, kernel, stride, padding, out_hw) -> np.ndarray:
    """Window sums of channels-last x [B, H, W, C] (zero padding; windows clipped to the input)."""
    bsz, h, wd, c = x.shape
    oh, ow = out_hw
    out = np.zeros((bsz, oh, ow, c))
    for y in range(oh):
        for z in range(ow):
            y0, z0 = y * stride[0] - padding[0], z * stride[1] - padding[1]
            ys = slice(max(y0, 0), min(y0 + kernel[0], h))
            zs = slice(max(z0, 0), min(z0 + kernel[1], wd))
            out[:, y, z] = x[:, ys, zs].sum(axis=(1, 2))
    return out


def neuron_step(
    v, current, vth, *, beta=None, reset="soft", v_reset=0.0, strict=False, max_spikes=1, integer=False
):
    """One step of DESIGN.md §3 on arrays broadcasting over [..., C]; returns (new v, spikes s).

    fp32: v = beta·v + I in float32; int: v = sign(v)·((|v|·decay) >> 12) + I with decay = beta.
    """
    if integer:
        v = v.astype(np.int64)
        if beta is not None:
            mag = (np.abs(v) * np.asarray(beta, np.int64)) >> 12
            v = np.sign(v) * mag
        vn = v + current.astype(np.int64)
        if max_spikes == 1:
            s = (vn > vth) if strict else (vn >= vth)
            s = s.astype(np.int64)
        else:
            q = (vn - 1) // vth if strict else vn // vth
            s = np.clip(q, 0, max_spikes)
    else:
        v = v.astype(np.float32)
        vl = (np.asarray(beta, np.float32) * v).astype(np.float32) if beta is not None else v
        vn = (vl + current.astype(np.float32)).astype(np.float32)
        vth = np.asarray(vth, np.float32)
        if max_spikes == 1:
            s = ((vn > vth) if strict else (vn >= vth)).astype(np.int64)
        else:
            q = (np.ceil(vn / vth) - 1) if strict else np.floor(vn / vth)
            s = np.clip(q, 0, max_spikes).astype(np.int64)
    if reset == "soft":
        vn = vn - (s * vth).astype(vn.dtype)
    elif reset == "hard":
        vn = np.where(s > 0, np.asarray(v_reset, vn.dtype), vn)
    return (vn.astype(np.int32) if integer else vn.astype(np.float32)), s

"""Pass helpers (not a pass): the index map of a ``reindexing`` op (``snnc.ir.op.Op.reindexing``).

A reindexing op copies elements: y.flat[i] = x_k.flat[g(i)] for one operand k per output
element.  Passes that carry a per-element quantity along with the values (a threshold scale, a
per-channel statistic) need that map: :func:`reindex` applies the op to numpy arrays of any dtype
(the quantity itself, forwards), :func:`scatter_back` sends an output-shaped array back to the
operands (backwards), leaving NaN where an operand element reaches no output (a slice drops it),
and :func:`gather_columns` folds a re-indexing into the linear map that reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from snnc.errors import UnsupportedError
from snnc.ir import Node
from snnc.ir import ops as O


def reindex(node: Node, operands: Sequence[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
    """The op of ``node`` (a reindexing op) applied to per-sample arrays ``operands``."""
    op = node.op
    if op.shape_only:
        return np.asarray(operands[0]).reshape(out_shape)
    if isinstance(op, O.Concat):
        return np.concatenate(list(operands), axis=op.axis)
    if isinstance(op, O.Permute):
        return np.transpose(operands[0], op.dims)
    if isinstance(op, O.Slice):
        return np.take(operands[0], np.arange(op.start, op.stop, op.step), axis=op.axis)
    if isinstance(op, O.Upsample):
        return np.repeat(np.repeat(operands[0], op.scale[0], axis=1), op.scale[1], axis=2)
    raise UnsupportedError(f"{op.name} %{node.name}: no index map for this reindexing op")


def scatter_back(node: Node, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...],
                 values: np.ndarray) -> list[np.ndarray]:
    """Per operand, the elements of ``values`` (shaped like the output) at the operand positions
    they were copied from; NaN where no output element reads the position.  Where several output
    elements copy one position (upsample), the last one in flat order wins."""
    sizes = [int(np.prod(s)) for s in in_shapes]
    offsets = np.cumsum([0, *sizes])
    sources = [np.arange(offsets[k], offsets[k + 1]).reshape(s) for k, s in enumerate(in_shapes)]
    source = reindex(node, sources, out_shape).reshape(-1)
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    out = []
    for k, shape in enumerate(in_shapes):
        mine = (source >= offsets[k]) & (source < offsets[k + 1])
        back = np.full(sizes[k], np.nan)
        back[source[mine] - offsets[k]] = flat[mine]
        out.append(back.reshape(shape))
    return out


def gather_columns(weight: np.ndarray, source: np.ndarray, n: int) -> np.ndarray:
    """A linear map's ``weight`` [out, m] whose input element i copies element ``source[i]`` of an
    n-element value, as a weight [out, n] on that value itself: each element's column is the sum
    of the columns of its copies (zero where nothing copies it)."""
    columns = np.zeros((n, weight.shape[0]))
    np.add.at(columns, np.asarray(source).reshape(-1), np.asarray(weight, dtype=np.float64).T)
    return columns.T

"""fold-thresholds: fold neuron thresholds and output scales into the synaptic weights.

After this pass every neuron has v_th = 1 and out_scale = 1: it sends unit spikes.

How: every value carries a positive scale s (real value = stored value × s, one factor per
element, constant over the spatial positions of a channel where a conv reads it).  A neuron
with threshold θ and output scale σ must read a current stored in units of θ and then
stores its output in units of σ (spikes).  Walking backwards, each value learns the scale
its readers want (a neuron: θ; a readout or graph output: 1; pooling and add pass the wish
through; a ``reindexing`` op — reshape, concat, permute, slice, upsample — passes it element by
element to the operand elements it copies, so a channel shuffle or a channel split carries each
channel's scale with the channel); walking forwards, the scales travel with the copied elements
in the same way, and every conv / linear / scale op absorbs its input scale and produces the
wanted output scale:
W'[o, i] = W[o, i]·s_in[i] / s_out[o], b' = b / s_out.  Where the scales still disagree (a
residual add whose shortcut comes straight from a neuron, a neuron fed by an unweighted
op) a per-channel ``scale`` op is inserted; before the readout the last scale is undone
(by the last weighted layer, or a ``scale`` op when there is none).

Preserves: the SNN-mode and ANN-mode outputs (differential test: logits equal within 1e-4
relative; spikes identical up to float rounding at exact threshold ties).  Hard-reset
potentials ``v_reset`` are divided by θ.
Requires: ``lower-neurons`` (no relu / clip / batchnorm left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.errors import PassError, UnsupportedError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._neurons import neuron_vector
from snnc.passes._params import store_param, with_attrs
from snnc.passes._reindex import reindex, scatter_back

_RTOL = 1e-6


@register_pass
@dataclass(frozen=True)
class FoldThresholds(Pass):
    name: ClassVar[str] = "fold-thresholds"

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        for node in graph.nodes:
            if isinstance(node.op, (O.Relu, O.Clip, O.BatchNorm)):
                raise PassError(
                    f"fold-thresholds: {node.op.name} %{node.name} is still an ANN op; run fold-bn and "
                    "lower-neurons first"
                )
        _Folder(graph).run()
        graph.infer_types()


class _Folder:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.shape = {name: t.shape for name, t in graph.inputs}
        for n in graph.nodes:
            assert n.type is not None
            self.shape[n.name] = n.type.shape
        self.scale: dict[str, np.ndarray] = {}
        self.want: dict[str, np.ndarray] = {}

    # -- backward: what scale does each value's reader want? ----------------------------------
    def demands(self) -> None:
        g = self.graph
        for out in g.outputs:
            self._wish(out, np.ones(self.shape[out]))
        for node in reversed(g.nodes):
            op = node.op
            if isinstance(op, O.Neuron):
                theta = neuron_vector(g, node, "v_th")
                self._wish(node.inputs[0], _expand(theta, self.shape[node.inputs[0]]))
            elif isinstance(op, O.Readout):
                self._wish(node.inputs[0], np.ones(self.shape[node.inputs[0]]))
            elif node.name not in self.want:
                continue
            elif op.channelwise:
                per = _channelwise(self.want[node.name])
                if per is not None:
                    self._wish(node.inputs[0], _expand(per, self.shape[node.inputs[0]]))
            elif op.reindexing:
                # a copy of elements: each operand element wants what the outputs copied from it want
                # (nothing, NaN, where a slice drops it); concat, permute (channel shuffle), slices
                shapes = [self.shape[v] for v in node.inputs]
                parts = scatter_back(node, shapes, self.shape[node.name], self.want[node.name])
                for v, part in zip(node.inputs, parts, strict=True):
                    self._wish(v, part)
            elif isinstance(op, O.Add):
                for v in node.inputs:
                    self._wish(v, self.want[node.name])

    def _wish(self, value: str, scale: np.ndarray) -> None:
        # several readers: the one met first walking backwards (the last in graph order) decides
        # each element; NaN (no wish, e.g. a channel a slice drops) is filled by a later wish;
        # the forward walk inserts scale ops for the readers that did not decide
        scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), self.shape[value])
        old = self.want.get(value)
        if old is None:
            self.want[value] = scale.copy()
            return
        unknown = np.isnan(old)
        old[unknown] = scale[unknown]

    def _wanted(self, node: Node, fallback: np.ndarray) -> np.ndarray | None:
        """The per-channel output scale the readers of ``node`` want (``fallback`` where they want
        nothing), or None if the wish varies within a channel."""
        want = self.want.get(node.name)
        if want is None:
            return _channelwise(fallback)
        return _channelwise(np.where(np.isnan(want), fallback, want))

    # -- forward: rewrite -------------------------------------------------------------------
    def run(self) -> None:
        g = self.graph
        self.demands()
        for name, _ in g.inputs:
            self.scale[name] = np.ones(self.shape[name])
        for node in list(g.nodes):
            op = node.op
            if op.weighted:
                self._weighted(node)
            elif isinstance(op, O.Scale):
                self._scale_op(node)
            elif isinstance(op, O.Neuron):
                self._neuron(node)
            elif isinstance(op, O.Encode):
                self.scale[node.name] = self.scale[node.inputs[0]]
            elif op.channelwise:
                per = self._per_channel_input(node, 0)
                self.scale[node.name] = _expand(per, self.shape[node.name])
            elif op.reindexing:
                # the scales travel with the elements they belong to
                self.scale[node.name] = reindex(node, [self.scale[v] for v in node.inputs], self.shape[node.name])
            elif isinstance(op, O.Add):
                self._add(node)
            elif isinstance(op, O.Readout):
                self._to_units(node, 0, np.ones(self.shape[node.inputs[0]]))
                self.scale[node.name] = np.ones(self.shape[node.name])
            else:
                raise UnsupportedError(f"fold-thresholds: no rule for {op.name} %{node.name}")
        for i, out in enumerate(g.outputs):
            if not _close(self.scale[out], 1.0):
                fix = self._insert_scale(None, out, self.scale[out])
                g.outputs[i] = fix

    def _weighted(self, node: Node) -> None:
        g = self.graph
        w = np.asarray(node.param(g, "weight"), dtype=np.float64)
        s_in = self.scale[node.inputs[0]]
        s_out = self._wanted(node, np.ones(self.shape[node.name]))
        if s_out is None:
            s_out = np.ones(self.shape[node.name][0])
        if isinstance(node.op, O.Linear):
            w = w * s_in.reshape(1, -1) / s_out.reshape(-1, 1)
        else:
            per_in = self._per_channel_input(node, 0)
            groups = node.op.groups  # type: ignore[attr-defined]
            cin_g = w.shape[1]
            cout_g = w.shape[0] // groups
            # input channel of weight [o, j] is group(o)·cin_g + j
            idx = (np.arange(w.shape[0]) // cout_g)[:, None] * cin_g + np.arange(cin_g)[None, :]
            factor = per_in[idx] / s_out[:, None]
            w = w * factor.reshape(factor.shape + (1,) * (w.ndim - 2))
        store_param(g, node, "weight", w)
        b = node.param(g, "bias")
        if b is not None:
            store_param(g, node, "bias", np.asarray(b, dtype=np.float64) / s_out)
        self.scale[node.name] = _expand(s_out, self.shape[node.name])

    def _scale_op(self, node: Node) -> None:
        g = self.graph
        c = self.shape[node.name][0] if self.shape[node.name] else 1
        s_in = self._per_channel_input(node, 0)
        s_out = self._wanted(node, np.ones(self.shape[node.name]))
        if s_out is None:
            s_out = np.ones(c)
        sc = node.param(g, "scale")
        sc = np.ones(c) if sc is None else np.broadcast_to(np.asarray(sc, dtype=np.float64).reshape(-1), (c,))
        new = sc * s_in / s_out
        key = node.params.get("scale") or g.fresh_param(f"{node.name}.scale")
        node.params["scale"] = key
        store_param(g, node, "scale", new)
        b = node.param(g, "bias")
        if b is not None:
            store_param(g, node, "bias", np.asarray(b, dtype=np.float64) / s_out)
        self.scale[node.name] = _expand(s_out, self.shape[node.name])

    def _neuron(self, node: Node) -> None:
        g = self.graph
        theta = neuron_vector(g, node, "v_th")
        sigma = neuron_vector(g, node, "out_scale")
        self._to_units(node, 0, _expand(theta, self.shape[node.inputs[0]]))
        op: O.Neuron = node.op  # type: ignore[assignment]
        changes: dict[str, float] = {"v_th": 1.0, "out_scale": 1.0}
        if op.v_reset != 0.0 and (op.reset is O.Reset.HARD or op.leak is O.Leak.TAU):
            if not np.all(theta == theta[0]):
                raise UnsupportedError(
                    f"fold-thresholds: neuron %{node.name} has v_reset={op.v_reset} and per-channel thresholds; "
                    "a per-channel reset potential cannot be expressed"
                )
            changes["v_reset"] = op.v_reset / float(theta[0])
        node.op = with_attrs(op, **changes)
        node.params.pop("v_th", None)
        node.params.pop("out_scale", None)
        self.scale[node.name] = _expand(sigma, self.shape[node.name])

    def _add(self, node: Node) -> None:
        first = self.scale[node.inputs[0]]
        per = self._wanted(node, first)
        target = _expand(per, self.shape[node.name]) if per is not None else first
        for i in range(len(node.inputs)):
            self._to_units(node, i, target)
        self.scale[node.name] = target

    # -- fixes ------------------------------------------------------------------------------
    def _per_channel_input(self, node: Node, i: int) -> np.ndarray:
        """The per-channel scale of operand i, inserting a scale op if it varies over positions."""
        s = self.scale[node.inputs[i]]
        per = _channelwise(s)
        if per is None:
            self._to_units(node, i, np.ones(self.shape[node.inputs[i]]))
            per = np.ones(self.shape[node.inputs[i]][0])
        return per

    def _to_units(self, node: Node, i: int, target: np.ndarray) -> None:
        """Make operand i of ``node`` arrive in units ``target`` (inserting a scale op if needed)."""
        v = node.inputs[i]
        s = self.scale[v]
        if _close(s, target):
            return
        fix = self._insert_scale(node, v, s / target)
        node.inputs = node.inputs[:i] + (fix,) + node.inputs[i + 1 :]
        self.scale[fix] = np.broadcast_to(target, self.shape[v]).copy()

    def _insert_scale(self, before: Node | None, value: str, factor: np.ndarray) -> str:
        g = self.graph
        per = _channelwise(np.broadcast_to(factor, self.shape[value]))
        if per is None:
            raise UnsupportedError(
                f"fold-thresholds: %{value} would need a different scale at each position of a channel"
            )
        name = g.fresh_name(f"{value}_rescale")
        key = g.fresh_param(f"{name}.scale")
        g.params[key] = per.astype(np.float32)
        node = Node(name, O.Scale(), (value,), params={"scale": key})
        where = g.nodes.index(before) if before is not None else len(g.nodes)
        g.nodes.insert(where, node)
        self.shape[name] = self.shape[value]
        self.scale[name] = np.ones(self.shape[value])
        node.type = node.op.infer_type(name, [g.value_type(value)], g.param_shapes(node))
        return name


def _expand(per_channel: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast a per-channel vector (or a scalar) over a value of ``shape``."""
    v = np.asarray(per_channel, dtype=np.float64).reshape(-1)
    if not shape:
        return v.reshape(())
    if v.size == 1:
        return np.full(shape, float(v[0]))
    return np.broadcast_to(v.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()


def _channelwise(s: np.ndarray) -> np.ndarray | None:
    """The per-channel vector of a scale array, or None if it varies within a channel.  NaN
    (no wish) is ignored; a channel that is all NaN stays NaN."""
    s = np.asarray(s, dtype=np.float64)
    if s.ndim == 0:
        return s.reshape(1)
    rows = s.reshape(s.shape[0], -1)
    known = ~np.isnan(rows)
    first = rows[np.arange(rows.shape[0]), known.argmax(axis=1)]
    with np.errstate(invalid="ignore"):
        agree = ~known | np.isclose(rows, first[:, None], rtol=_RTOL, atol=0.0)
    if np.all(agree):
        return first.copy()
    return None


def _close(a: np.ndarray, b: np.ndarray | float) -> bool:
    return bool(np.allclose(a, b, rtol=_RTOL, atol=0.0))

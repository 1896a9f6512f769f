"""lower-neurons: turn every ReLU / clipped activation into a spiking neuron.

Changes:
* ``relu`` → ``neuron`` with v_th = θ and out_scale = θ, θ from the ``Calibration`` that calibrate leaves in ``graph.analyses``
  (a scalar attribute for a per-layer θ, a per-channel parameter ``<node>.v_th`` /
  ``<node>.out_scale`` otherwise).  The node keeps its name, so later passes and reports can
  trace it.
* ``clip`` with lo = 0 (ReLU6, Hardtanh(0, n), QCFS) → ``neuron`` with θ = hi; no calibration
  needed.  A QCFS clip (levels L > 0) keeps its own shift as v_init, so that at T = L the
  neuron computes exactly the clip's quantiser (DESIGN §3; tests/test_conversion_theory.py).
  With ``clip=calibrated`` a clip without levels (ReLU6, Hardtanh) gets θ = min(hi, the calibrated
  threshold) per channel, as a ReLU does: ReLU6 layers whose activations stay far below 6
  (MobileNetV2's) would otherwise spend most of their T levels on values that never occur
  (the clipped ANN then clips at that θ as it does for ReLUs).
* ``negative=rectified``: the neurons also send −1 spikes while their net count is positive and
  their membrane is below 0 (``snnc.ir.ops.Neuron``): a neuron that an early positive current made
  fire takes those spikes back when the current turns negative, so its count is the quantised
  ReLU of its total input instead of an overestimate; the error no longer accumulates one-sided
  with depth (docs/analog_paths.md).
* redundant activation pairs merge first (clip∘relu = clip for a clip from 0, relu∘relu = relu).
* ``maxpool2d``: ``maxpool=gate`` → ``spike_maxpool`` (gated by accumulated spike counts) on
  the neuron's spikes, also through ``reindexing`` ops (SqueezeNet's max pooling of a concat of
  two ReLUs: spikes pass a copy unchanged); a maxpool read by a ReLU is first swapped behind it
  (relu∘max = max∘relu).  ``maxpool=count`` → ``spike_count_maxpool`` on the same spikes: at every
  step it sends the change of the window's largest net spike count, so over T steps it sends exactly
  that count, where the gate sends ~38 % more on SqueezeNet's inner poolings (inputs of similar rate
  take turns leading); squeezenet1_1, 300 test images: 62 -> 86 % at T = 32 (= the ANN).  Only the
  torch simulator runs it (tvm, loihi and nir refuse it by name): the default of ``ann-to-snn`` and
  ``ann-to-snn-fast``, not of the pipelines of those targets.
  ``maxpool=avg`` → ``avgpool2d`` (changes the function: a note says so).
  ``invariant-maxpool=true``: a max pooling of an activation of the input alone (the stem of
  ResNet, ShuffleNet, SqueezeNet, DenseNet: conv → BN → ReLU → max pool) is moved before the
  activation and stays ``maxpool2d`` on the analog current, exact and computed once per sample
  (the layers that read the direct-coded input already multiply analog values); gated pooling
  loses rate where inputs race (6 % of the pooled rate at T = 256 on ShuffleNet's stem, 13 % error
  at the next neuron; 0.5 % with this option).  In ``ann-to-snn`` and ``ann-to-snn-fast`` (on
  trained real models, 300 test images: resnet18 91.7 -> 95.3 % at T = 8, shufflenet_v2_x0_5
  83.7 -> 89.7 % at T = 32; squeezenet1_1, whose loss is in its inner gated poolings, 66 -> 62 %);
  not in ``ann-to-snn-unsigned`` / ``ann-to-nir``: targets that refuse ANN ops (tvm, loihi, nir)
  cannot take a ``maxpool2d``.  Only stems qualify: a pooling behind a neuron reads spikes whose
  value changes from step to step, and stays gated.
* a ``readout`` (mean current) is appended before the graph output, unless there is one.

Preserves: in ANN mode the graph computes the clipped network clamp(x, 0, θ) (exactly the
source for clip activations, and for ReLUs wherever activations stay below θ); in SNN mode
the mean of s·θ over T steps approximates it (error ≤ θ/(2T) per layer for a constant input
with v-init = 0.5).
Requires: ``calibrate`` for ReLUs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from snnc.errors import PassError, UnsupportedError
from snnc.ir import Graph, Node
from snnc.ir import ops as O
from snnc.pass_manager import Pass, PassContext, register_pass
from snnc.passes._neurons import set_neuron_vector
from snnc.passes.calibrate import Calibration


class ClipThreshold(enum.Enum):
    HI = "hi"  # θ = the clip's upper bound
    CALIBRATED = "calibrated"  # θ = min(hi, calibrated θ) for clips without levels (ReLU6)


class MaxPoolRule(enum.Enum):
    GATE = "gate"  # spike_maxpool: pass the spikes of the most active input of each window
    COUNT = "count"  # spike_count_maxpool: send the window's largest net spike count, exactly
    AVG = "avg"  # average pooling instead (a different function: warns)


@register_pass
@dataclass(frozen=True)
class LowerNeurons(Pass):
    name: ClassVar[str] = "lower-neurons"
    model: O.NeuronModel = O.NeuronModel.IF
    reset: O.Reset = O.Reset.SOFT
    v_init: float = 0.5
    max_spikes: int = 1
    maxpool: MaxPoolRule = MaxPoolRule.GATE
    beta: float = 0.9  # leak of model=lif (IF has none)
    clip: ClipThreshold = ClipThreshold.HI
    negative: O.Negative = O.Negative.NONE
    # max pooling of an activation of the input alone (a stem) pools the analog current instead
    invariant_maxpool: bool = False

    def option_problems(self) -> list[str]:
        problems = []
        if self.model is O.NeuronModel.CUBA:
            problems.append("model=cuba is for imported SNNs; use model=if or lif")
        if self.max_spikes < 1:
            problems.append(f"max-spikes={self.max_spikes} must be >= 1")
        if self.negative is O.Negative.SIGNED:
            problems.append("negative=signed would let a ReLU go negative; use negative=rectified (or none)")
        if self.negative is O.Negative.RECTIFIED and self.reset is not O.Reset.SOFT:
            problems.append("negative=rectified needs reset=soft")
        if self.model is O.NeuronModel.LIF and not 0.0 < self.beta <= 1.0:
            problems.append(f"beta={self.beta} must be in (0, 1] for model=lif")
        return problems

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        _merge_activations(graph)
        if self.maxpool is not MaxPoolRule.AVG:
            _swap_maxpool_relu(graph)
        if self.invariant_maxpool:
            _pool_invariant_currents(graph)
        calibration = graph.analyses.get(Calibration)
        stats = calibration.stats if calibration is not None else {}
        for node in list(graph.nodes):
            if isinstance(node.op, O.Relu):
                if node.name not in stats:
                    raise PassError(f"lower-neurons: relu %{node.name} has no threshold; run calibrate first")
                self._lower(graph, node, np.asarray(stats[node.name].threshold, dtype=np.float64), self.v_init)
            elif isinstance(node.op, O.Clip):
                op: O.Clip = node.op
                if op.lo != 0.0:
                    raise UnsupportedError(
                        f"lower-neurons: clip %{node.name} has lo={op.lo}; only clips from 0 (ReLU-n, QCFS) "
                        "map to spiking neurons"
                    )
                theta = np.array([op.hi])
                if self.clip is ClipThreshold.CALIBRATED and op.levels == 0 and node.name in stats:
                    theta = np.minimum(op.hi, np.asarray(stats[node.name].threshold, dtype=np.float64))
                self._lower(graph, node, theta, op.shift if op.levels > 0 else self.v_init)
        graph.infer_types()
        for node in list(graph.nodes):
            if isinstance(node.op, O.MaxPool2d):
                self._lower_maxpool(ctx, graph, node)
        _append_readout(graph)
        graph.infer_types()

    def _lower(self, graph: Graph, node: Node, theta: np.ndarray, v_init: float) -> None:
        lif = self.model is O.NeuronModel.LIF
        node.op = O.Neuron(
            model=self.model,
            reset=self.reset,
            v_init=v_init,
            beta=self.beta if lif else 1.0,
            max_spikes=self.max_spikes,
            negative=self.negative,
        )
        node.params = {}
        set_neuron_vector(graph, node, "v_th", theta)
        set_neuron_vector(graph, node, "out_scale", theta)

    def _lower_maxpool(self, ctx: PassContext, graph: Graph, node: Node) -> None:
        op: O.MaxPool2d = node.op  # type: ignore[assignment]
        if self.invariant_maxpool and _invariant(graph, node.inputs[0]):
            return  # pools the same analog current at every step: exact, computed once (hoisted)
        if self.maxpool is MaxPoolRule.AVG:
            node.op = O.AvgPool2d(kernel=op.kernel, stride=op.stride, padding=op.padding,
                                  ceil_mode=op.ceil_mode, count_include_pad=False)
            ctx.note(f"lower-neurons: maxpool2d %{node.name} replaced by average pooling (a different function; "
                     "use maxpool=gate to keep max pooling)")
            return
        bad = _non_spiking_sources(graph, node.inputs[0])
        if bad:
            raise UnsupportedError(
                f"lower-neurons: maxpool2d %{node.name} reads %{bad[0]}, not the output of an activation; "
                "spike max pooling needs spikes (use lower-neurons{maxpool=avg})"
            )
        spiking = O.SpikeCountMaxPool2d if self.maxpool is MaxPoolRule.COUNT else O.SpikeMaxPool2d
        node.op = spiking(kernel=op.kernel, stride=op.stride, padding=op.padding, ceil_mode=op.ceil_mode)


def _non_spiking_sources(graph: Graph, value: str) -> list[str]:
    """The values that ``value`` copies its elements from, looking through ``reindexing`` ops
    (SqueezeNet's concat of two ReLUs, a channel shuffle, a reshape), that are not neuron
    outputs.  Spikes pass a reindexing op unchanged, so gated max pooling may read its result."""
    node = graph.producer(value)
    if node is None:
        return [value]
    if isinstance(node.op, O.Neuron):
        return []
    if isinstance(node.op, (O.SpikeMaxPool2d, O.SpikeCountMaxPool2d)):
        # an already lowered pooling sends spikes of its input's kind (GoogLeNet's branch pool of
        # the stem's pool): max of max is the max over the union of the windows, also on counts
        return _non_spiking_sources(graph, node.inputs[0])
    if not node.op.reindexing:
        return [value]
    return [bad for v in node.inputs for bad in _non_spiking_sources(graph, v)]


def _invariant(graph: Graph, value: str) -> bool:
    """True if ``value`` is computed from the graph inputs alone by stateless ops that no neuron
    comes between (no activation, which becomes a neuron, no stateful op): the same at every step."""
    node = graph.producer(value)
    if node is None:
        return True
    if isinstance(node.op, (O.Relu, O.Clip)) or node.op.stateful:
        return False
    return all(_invariant(graph, v) for v in node.inputs)


def _pool_invariant_currents(graph: Graph) -> None:
    """maxpool(act(x)) → act(maxpool(x)) where x is invariant (a stem: conv → BN → ReLU → max
    pool on the direct-coded input): equal, as max commutes with the per-channel monotone clamp.
    The pooling then reads the analog current, exact and computed once, instead of gating spikes
    (whose winner changes as the counts race: ShuffleNet's stem lost 6 % of its rate at T = 256).
    The activation keeps its name (and its calibrated threshold: the pooled values are a subset of
    the values it was calibrated on); the pooled value keeps its users."""
    for pool in list(graph.nodes):
        if not isinstance(pool.op, O.MaxPool2d):
            continue
        act = graph.producer(pool.inputs[0])
        if act is None or not isinstance(act.op, (O.Relu, O.Clip)) or graph.only_user(act.name) is not pool:
            continue
        if not _invariant(graph, act.inputs[0]):
            continue
        graph.replace_uses(pool.name, act.name)
        pool.inputs = act.inputs
        act.inputs = (pool.name,)
        graph.nodes.remove(act)
        graph.nodes.insert(graph.nodes.index(pool) + 1, act)


def _merge_activations(graph: Graph) -> None:
    """Drop activations made redundant by the one they feed or read: clip(relu(x)) = clip(x) for
    a clip from 0, relu(relu(x)) = relu(x), relu(clip(x)) = clip(x) for a clip from lo >= 0."""
    for outer in list(graph.nodes):
        if not isinstance(outer.op, (O.Relu, O.Clip)):
            continue
        inner = graph.producer(outer.inputs[0])
        if inner is None or graph.only_user(inner.name) is not outer:
            continue
        if isinstance(outer.op, O.Clip) and outer.op.lo == 0.0 and isinstance(inner.op, O.Relu):
            outer.inputs = inner.inputs
            graph.nodes.remove(inner)
        elif isinstance(outer.op, O.Relu) and (
            isinstance(inner.op, O.Relu) or (isinstance(inner.op, O.Clip) and inner.op.lo >= 0.0)
        ):
            graph.remove(outer)


def _swap_maxpool_relu(graph: Graph) -> None:
    """relu(maxpool(x)) → maxpool(relu(x)) (equal: max commutes with monotone maps), so that
    the pooling reads spikes.  The relu keeps its name; the pooled value keeps its users."""
    for pool in list(graph.nodes):
        if not isinstance(pool.op, O.MaxPool2d):
            continue
        relu = graph.only_user(pool.name)
        if relu is None or not isinstance(relu.op, O.Relu):
            continue
        src = graph.producer(pool.inputs[0])
        if src is not None and isinstance(src.op, (O.Relu, O.Clip)):
            continue
        x = pool.inputs[0]
        graph.replace_uses(relu.name, pool.name)
        relu.inputs = (x,)
        pool.inputs = (relu.name,)
        graph.nodes.remove(relu)
        graph.nodes.insert(graph.nodes.index(pool), relu)


def _append_readout(graph: Graph) -> None:
    if any(isinstance(n.op, O.Readout) for n in graph.nodes):
        return
    if len(graph.outputs) != 1:
        raise UnsupportedError(
            f"lower-neurons: graph @{graph.name} has {len(graph.outputs)} outputs; a converted SNN has one readout"
        )
    out = graph.outputs[0]
    node = Node(graph.fresh_name("readout"), O.Readout(), (out,))
    graph.nodes.append(node)
    graph.outputs = [node.name]

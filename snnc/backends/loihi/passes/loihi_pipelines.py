"""The named pipeline of the Loihi target (``snnc compile --target loihi`` uses it by default).

* ``ann-to-loihi``: conversion for Loihi's neuron, then the Loihi lowering passes:
  hard reset to 0 and ``v`` starting at 0 (``lower-neurons{reset=hard, v-init=0}``), thresholds and
  output scales re-tuned for the hard-reset dynamics at the chosen T (``loihi-thresholds``), folded
  into the weights, direct (graded) input; then ``loihi-legalize`` (strict threshold, IF as LIF, max
  pooling as OR pooling, pooling composed into the conv / linear next to it), ``loihi-quantize``
  (8-bit weights, 17-bit thresholds, netx biases, graded input levels) and ``loihi-map`` (cores and
  chips of Loihi 2; the target passes its own chip and ``--target-config`` to it).
  Max pooling stays gated (``maxpool=gate``) through the threshold tuning, whose ANN-mode targets then
  are the max-pooled values, and becomes OR pooling in ``loihi-legalize``.
"""

from __future__ import annotations

from snnc.pass_manager import register_pipeline

ANN_TO_LOIHI_CONVERT = (
    "canonicalize,fold-bn,calibrate{method=percentile},lower-neurons{reset=hard,v-init=0.0},"
    "loihi-thresholds,fold-thresholds,encode-input{scheme=direct}"
)
LOIHI_LOWERING = "loihi-legalize,loihi-quantize,loihi-map"
ANN_TO_LOIHI = f"{ANN_TO_LOIHI_CONVERT},{LOIHI_LOWERING},count-ops"

register_pipeline("ann-to-loihi", ANN_TO_LOIHI)

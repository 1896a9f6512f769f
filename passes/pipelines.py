"""The named conversion pipelines (``snnc compile --pipeline NAME``).

* ``ann-to-snn``: the default for an ANN: rate coding with binary spikes, IF neurons with
  soft reset and the half-threshold initial membrane (Deng & Gu's shift; QCFS's quantiser),
  thresholds from per-channel calibration folded into the weights, direct input coding.
* ``ann-to-snn-fast``: for small T, the Adaptive Calibration recipe (Wang et al. 2025):
  MSE thresholds at the target T, AdaFire burst limits, SSC threshold compression with
  bias correction, then input-aware early exit.
* ``ann-to-snn-phase``: single-spike phase coding with threshold shift and base manipulation
  (Hwang & Kung 2024); the graph attribute ``timesteps`` becomes the pipelined length.
"""

from __future__ import annotations

from snnc.pass_manager import register_pipeline

ANN_TO_SNN = (
    "canonicalize,fold-bn,calibrate{method=percentile},lower-neurons{reset=soft,v-init=0.5},"
    "fold-thresholds,encode-input{scheme=direct},count-ops"
)
ANN_TO_SNN_FAST = (
    "canonicalize,fold-bn,calibrate{method=mse},lower-neurons{reset=soft,v-init=0.5},"
    "adafire,compress-spikes,fold-thresholds,encode-input{scheme=direct},adaptive-timesteps,count-ops"
)
ANN_TO_SNN_PHASE = (
    "canonicalize,fold-bn,calibrate{method=max},lower-neurons{reset=soft,v-init=0.5},"
    "phase-coding,count-ops"
)

register_pipeline("ann-to-snn", ANN_TO_SNN)
register_pipeline("ann-to-snn-fast", ANN_TO_SNN_FAST)
register_pipeline("ann-to-snn-phase", ANN_TO_SNN_PHASE)

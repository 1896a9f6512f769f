"""The named conversion pipelines (``snnc compile --pipeline NAME``).

* ``ann-to-snn``: the default for an ANN: rate coding with binary spikes, IF neurons with
  soft reset and the half-threshold initial membrane (Deng & Gu's shift; QCFS's quantiser),
  per-channel thresholds at the 99.99th percentile of the positive calibration activations
  (robust normalisation: on the digits CNN and MLP it matches or beats max at T = 4-16),
  folded into the weights, direct input coding.  Analog paths (docs/analog_paths.md): a conv /
  linear read by a pointwise one merges into it (compose-linear), ReLU6 clips get calibrated thresholds below 6 (clip=calibrated), neurons
  take back the spikes an early positive current made them send (negative=rectified), and an
  analog value that a conv / linear still reads is spike-coded by a signed neuron
  (signed-neurons); a value that only enters a neuron's input current (ResNet's residual add)
  stays analog.  A max pooling of an activation of the input alone (the stem of ResNet,
  ShuffleNet, SqueezeNet, DenseNet) pools the analog current, exact and computed once
  (lower-neurons{invariant-maxpool}): gated spike pooling of the stem lost accuracy on the trained
  real models (docs/real_models.md: resnet18 91.7 -> 95.3 % at T = 8, shufflenet_v2_x0_5 83.7 ->
  89.7 % at T = 32, 300 test images).  Max poolings deeper in the network send the window's
  largest net spike count (lower-neurons{maxpool=count}, ``spike_count_maxpool``): the gated
  pooling sent ~38 % more on squeezenet1_1, whose accuracy at T = 32 goes from 62 % to the ANN's
  86 % (docs/real_models.md).  Only the torch simulator runs it: the pipelines of the tvm, loihi and
  nir targets keep gated pooling (or OR pooling), and those targets refuse it by name.
* ``ann-to-snn-corrected``: ``ann-to-snn`` for a model deployed at one T: after ``signed-neurons``,
  ``bias-correct{batches=1}`` shifts each spiking layer's bias by its mean rate error at the compile
  T (one simulation of the neuron's ancestors per neuron on one calibration batch).  A rectified IF
  neuron sends about 1-2 % too few spikes at T = 32 (charge still queued in v at the end) and deep
  networks compound it: on the trained mobilenet_v2 of docs/real_models.md it lifts T = 32 from
  90.0 % to the ANN's 91.7 % (docs/analog_paths.md).  Not the default: its graph is fitted to one T
  (``ann-to-snn``'s serves every T) and it multiplies the compile time.
* ``ann-to-snn-unsigned``: ``ann-to-snn`` without negative spikes (no negative=rectified, no
  signed-neurons: analog paths stay analog currents), for targets whose neurons send 0/1 spikes
  only (the tvm target's default); its max poolings are all gated spike poolings, as the tvm
  kernels and loihi take no ``maxpool2d`` (no invariant-maxpool).
* ``ann-to-snn-fast``: for small T, the Adaptive Calibration recipe (Wang et al. 2025) in the
  research note's order: MSE thresholds at the target T, AdaFire burst limits, SSC threshold
  compression with bias correction, threshold folding, then input-aware early exit; with
  ``ann-to-snn``'s negative spikes (negative=rectified, signed-neurons: AdaFire turns them into
  bursts of up to φ spikes of either sign, ``snnc.ir.ops.Neuron``) and its pooling (the stem on the
  analog current, count max pooling deeper in).  Burst limits up to 8 (burst-ann2snn's ImageNet
  setting; its CIFAR setting is 4): at T = 4 a layer then resolves up to 32 levels; with 4 the
  digits MLP at T = 4 disagreed with its ANN on 2 of 1797 images (both in the test split), with 8
  on none.  Count pooling was not what cost squeezenet1_1 accuracy behind burst neurons (69.0 ->
  45.7 % at T = 8): after adafire it is at 87 % (gated 86 %, ANN 86.7 %, 150 test images); the
  per-layer ratios of compress-spikes, applied together, took it to 57 % and the early exit to 46 %.
  Both passes now check their choice as a whole (compress-spikes' joint check, adaptive-timesteps'
  max-loss); docs/real_models.md has the numbers.
* ``ann-to-snn-phase``: single-spike phase coding with threshold shift and base manipulation
  (Hwang & Kung 2024) with a window of T steps; the graph attribute ``timesteps`` becomes the
  pipelined length (layers + 1)·T, which is what the simulator runs.
* ``ann-to-nir``: conversion for NIR's neurons (the nir target's default for an ANN): NIR's IF / LIF
  reset to ``v_reset`` and start at rest, so hard reset to 0 with ``v`` starting at 0
  (``lower-neurons{reset=hard, v-init=0}``), thresholds and output scales re-tuned for hard reset at
  the chosen T (``loihi-thresholds``: it reads no chip, only the hard-reset dynamics), folded into the
  weights, direct (analog) input; then ``nir-legalize`` (strict threshold, max pooling as OR
  pooling).  docs/nir.md has what snnTorch and Norse make of the file.
* ``snn-to-nir``: the nir target's default for a direct-coded SNN (snnTorch, SpikingJelly, Norse):
  its neurons as they are, through ``nir-legalize``; the target refuses what NIR cannot express.
"""

from __future__ import annotations

from snnc.pass_manager import register_pipeline

ANN_TO_SNN = (
    "canonicalize,fold-bn,compose-linear,calibrate{method=percentile},"
    "lower-neurons{reset=soft,v-init=0.5,clip=calibrated,negative=rectified,maxpool=count,invariant-maxpool=true},"
    "signed-neurons,"
    "fold-thresholds,encode-input{scheme=direct},count-ops"
)
ANN_TO_SNN_CORRECTED = ANN_TO_SNN.replace("signed-neurons,", "signed-neurons,bias-correct{batches=1},")
ANN_TO_SNN_UNSIGNED = (
    "canonicalize,fold-bn,compose-linear,calibrate{method=percentile},"
    "lower-neurons{reset=soft,v-init=0.5,clip=calibrated},fold-thresholds,encode-input{scheme=direct},count-ops"
)
ANN_TO_SNN_FAST = (
    "canonicalize,fold-bn,compose-linear,calibrate{method=mse},"
    "lower-neurons{reset=soft,v-init=0.5,clip=calibrated,negative=rectified,maxpool=count,invariant-maxpool=true},"
    "signed-neurons,adafire{max-spikes=8},compress-spikes,fold-thresholds,encode-input{scheme=direct},"
    "adaptive-timesteps,count-ops"
)
ANN_TO_SNN_PHASE = (
    "canonicalize,fold-bn,calibrate{method=max},lower-neurons{reset=soft,v-init=0.5},"
    "encode-input{scheme=direct},phase-coding,count-ops"
)

ANN_TO_NIR = (
    "canonicalize,fold-bn,calibrate{method=percentile},lower-neurons{reset=hard,v-init=0.0},loihi-thresholds,"
    "fold-thresholds,encode-input{scheme=direct},nir-legalize,count-ops"
)
SNN_TO_NIR = "canonicalize,fold-bn,nir-legalize,count-ops"

register_pipeline("ann-to-snn", ANN_TO_SNN)
register_pipeline("ann-to-snn-corrected", ANN_TO_SNN_CORRECTED)
register_pipeline("ann-to-snn-unsigned", ANN_TO_SNN_UNSIGNED)
register_pipeline("ann-to-snn-fast", ANN_TO_SNN_FAST)
register_pipeline("ann-to-snn-phase", ANN_TO_SNN_PHASE)
register_pipeline("ann-to-nir", ANN_TO_NIR)
register_pipeline("snn-to-nir", SNN_TO_NIR)

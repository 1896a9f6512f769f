"""The named direct-to-event pipeline: the default of ``snnc compile`` for a source with spiking neurons.

``direct-to-event`` turns a pretrained direct-coded SNN (snnTorch, SpikingJelly, Norse, or
any ``neuron`` graph whose first layer reads the analog input at every step) into an
event-based SNN at the same T (``--timesteps``):

1. ``canonicalize,fold-bn``: tidy the imported graph (SpikingJelly CNNs carry BatchNorm);
2. ``d2e-encode{scheme=if}``: an integrate-and-fire input encoder (a deterministic rate
   code), so the first layer accumulates input events instead of multiplying the image T
   times;
3. ``d2e-calibrate``: per-channel threshold scaling so that every layer fires as often under
   event input as it did under direct coding (no labels needed);
4. ``d2e-finetune``: 30 epochs of distillation from the direct-coded teacher with the
   event-driven forward and a fan-out-weighted spike-rate L1 penalty (needs labels);
5. ``count-ops``: MACs, SOPs and spikes of the result.

The choice of scheme and options, and what each step buys, is measured by
``benchmarks/direct_to_event.py`` (docs/direct_to_event.md): on the digits SNNs the IF
encoder beats Bernoulli rate coding (sampling noise at T <= 8) and TTFS (the value survives
only in the spike time); in exploratory runs phase coding lost to it on hard-reset models
(its front-loaded drive overshoots the threshold and the reset discards the excess).
``direct-to-event-unlabelled`` stops before the fine-tune, for calibration data without
labels.
"""

from __future__ import annotations

from snnc.pass_manager import register_pipeline

DIRECT_TO_EVENT_UNLABELLED = "canonicalize,fold-bn,d2e-encode{scheme=if},d2e-calibrate,count-ops"
DIRECT_TO_EVENT = "canonicalize,fold-bn,d2e-encode{scheme=if},d2e-calibrate,d2e-finetune,count-ops"

register_pipeline("direct-to-event", DIRECT_TO_EVENT)
register_pipeline("direct-to-event-unlabelled", DIRECT_TO_EVENT_UNLABELLED)

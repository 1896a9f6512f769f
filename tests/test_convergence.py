"""The converted SNN converges to its clipped ANN on real architectures (docs/analog_paths.md).

For each model: the cosine similarity of the SNN's logits (``ann-to-snn``, torch simulator) to the
clipped ANN's (the converted graph in ANN mode: every neuron at its rate clamp(I/θ, 0, 1)·θ,
signed ones clamp(I/θ, −1, 1)·θ) must grow with T, within noise, and reach 0.99 at the largest T.
Fast set: small stand-ins (tests/models.py's ResNet18ish; torchvision's MobileNetV2 class with its
first three stages at width 0.5 on 16x16 inputs, He weights, BatchNorm statistics from data and
centred logits, so that the logits depend on the input; ShuffleNetV2 with two units per stage at
3x32x32, which needs the stem's max pooling on the analog current: ann-to-snn's
lower-neurons{invariant-maxpool}).
Slow set: squeezenet1_1 whole (He weights) and the torchvision resnet18 and mobilenet_v2 themselves
at 3x32x32 with random weights and BatchNorm statistics set from random data, as the issue measured.
"""

from __future__ import annotations

import models
import numpy as np
import pytest
import torch
from conversion_util import SIM, context, run

from snnc.frontend.fx import import_module
from snnc.ir import Graph
from snnc.ir import ops as O
from snnc.passes.pipelines import ANN_TO_SNN
from snnc.passes.signed_neurons import analog_reads

NOISE = 0.01
# MobileNetV2's first three stages (6 inverted-residual blocks, 3 residual adds, one of them fed by
# another add): every kind of analog path of the full network at a third of its depth
SHORT = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2]]  # a cosine may drop by this much from one T to the next (a few images)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)))


def _convert(model: torch.nn.Module, calib: np.ndarray, timesteps: int, pipeline: str = ANN_TO_SNN
             ) -> tuple[Graph, Graph]:
    """(the SNN of the ann-to-snn pipeline without count-ops, the same graph read in ANN mode)."""
    g = import_module(model, torch.as_tensor(calib[:1]))
    snn = run(pipeline.replace(",count-ops", ""), g, context(calib, timesteps=timesteps, batch_size=32))
    return snn, snn


def _curve(snn: Graph, x: np.ndarray, timesteps: tuple[int, ...]) -> list[float]:
    ann = SIM.run_ann(snn, x)[snn.outputs[0]]
    return [_cosine(SIM.run_snn(snn, x, t).logits, ann) for t in timesteps]


def _assert_converges(curve: list[float], timesteps: tuple[int, ...]) -> None:
    text = ", ".join(f"T={t}: {c:.4f}" for t, c in zip(timesteps, curve, strict=True))
    assert curve[-1] >= 0.99, text
    assert all(b >= a - NOISE for a, b in zip(curve, curve[1:], strict=False)), text


def _mobilenet_standin() -> torch.nn.Module:
    import torchvision

    with models._seeded(0):
        m = torchvision.models.MobileNetV2(num_classes=10, width_mult=0.5, inverted_residual_setting=SHORT)
    calibration = torch.rand((64, 3, 16, 16), generator=torch.Generator().manual_seed(2))
    models.he_init(m, 0)
    models.randomize_batchnorm(m, 1, calibration)
    m.eval()
    models.center_logits(m, calibration)
    return m


def _uniform(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *shape)).astype(np.float32)


def test_resnet18ish_converges() -> None:
    model = models.ResNet18ish()
    ts = (8, 32, 128)
    snn, _ = _convert(model, model.example_input(32, seed=5).numpy(), ts[-1])
    _assert_converges(_curve(snn, model.example_input(4, seed=6).numpy(), ts), ts)


def test_mobilenet_v2_standin_converges() -> None:
    model = _mobilenet_standin()
    ts = (8, 32, 128)
    snn, _ = _convert(model, _uniform((3, 16, 16), 32, 5), ts[-1])
    # the linear bottlenecks are spike-coded: no conv / linear reads another one's analog output
    assert analog_reads(snn) == {}
    assert any(isinstance(n.op, O.Neuron) and n.op.negative is O.Negative.SIGNED for n in snn.nodes)
    _assert_converges(_curve(snn, _uniform((3, 16, 16), 4, 6), ts), ts)


def _small_torchvision(name: str, **kwargs: object) -> torch.nn.Module:
    """A torchvision classifier as the stand-ins: He weights, BatchNorm statistics from data,
    centred logits (where the head is a linear), 10 classes, 3x32x32."""
    import torchvision

    with models._seeded(0):
        m = getattr(torchvision.models, name)(weights=None, num_classes=10, **kwargs)
    calibration = torch.rand((64, 3, 32, 32), generator=torch.Generator().manual_seed(2))
    models.he_init(m, 0)
    models.randomize_batchnorm(m, 1, calibration)
    m.eval()
    if any(isinstance(mod, torch.nn.Linear) for mod in m.modules()):
        models.center_logits(m, calibration)
    return m


@pytest.mark.slow  # 75 s on the loaded 2-core machine
def test_squeezenet_converges() -> None:
    """SqueezeNet 1.1 whole (max pooling of the concat of two ReLUs, a conv + ReLU classifier)."""
    model = _small_torchvision("squeezenet1_1")
    ts = (8, 32, 128)
    snn, _ = _convert(model, _uniform((3, 32, 32), 32, 5), ts[-1])
    _assert_converges(_curve(snn, _uniform((3, 32, 32), 4, 6), ts), ts)


def test_shufflenet_v2_standin_converges() -> None:
    """ShuffleNetV2 with two units per stage (channel split = slices, channel shuffle = reshape +
    permute, downsampling units with two branches): each scale follows its channel."""
    from torchvision.models.shufflenetv2 import ShuffleNetV2

    with models._seeded(0):
        m = ShuffleNetV2([2, 2, 2], [24, 48, 96, 192, 256], num_classes=10)
    calibration = torch.rand((64, 3, 32, 32), generator=torch.Generator().manual_seed(2))
    models.he_init(m, 0)
    models.randomize_batchnorm(m, 1, calibration)
    m.eval()
    models.center_logits(m, calibration)
    ts = (8, 32, 128)
    snn, _ = _convert(m, _uniform((3, 32, 32), 32, 5), ts[-1])  # the stem pooled on the current
    assert {"permute", "slice"} <= {n.op.name for n in snn.nodes}, sorted({n.op.name for n in snn.nodes})
    _assert_converges(_curve(snn, _uniform((3, 32, 32), 4, 6), ts), ts)


def _torchvision(name: str) -> tuple[torch.nn.Module, np.ndarray]:
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    x = torch.rand(32, 3, 32, 32)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    model.eval()
    return model, x.numpy()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_converges(name: str) -> None:
    model, calib = _torchvision(name)
    ts = (8, 32, 128, 256)
    snn, _ = _convert(model, calib, ts[-1])
    _assert_converges(_curve(snn, _uniform((3, 32, 32), 4, 1), ts), ts)

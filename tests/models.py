"""Deterministic models for tests: random weights from a seed, no downloads, in eval mode.

Each model covers a family of layers and idioms that a frontend or a conversion pass must handle, and
carries BatchNorm running statistics and affine parameters set to non-trivial random values, so that a
BN-folding bug shows up as a numeric difference instead of hiding behind mean 0 / variance 1.
Weights are drawn at He's scale and the output bias is centred, so that, like a trained network, each
model's predictions vary from input to input (every class is predicted on a batch of 64 random inputs).
Every model has `input_shape` (without batch) and `example_input(batch, seed)`, which returns values in
[0, 1), as images are after normalisation to a non-negative range.
Building a model does not touch the global RNG.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
CALIBRATION_BATCH = 64


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run the block on a seeded fork of the global CPU RNG, which is restored after.

    Layer constructors draw their default init from the global RNG; `he_init` redraws it all, so the fork
    only keeps building a model from advancing the caller's RNG.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def he_init(model: nn.Module, seed: int) -> None:
    """Redraw every conv and linear weight from He's normal (std sqrt(2 / fan_in)), biases from N(0, 0.1²).

    PyTorch's default init shrinks activations layer by layer, so a deep random net maps every input to
    nearly the same logits; He's scale keeps them O(1) through ReLUs. Changes only convs and linears.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            if module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))


@torch.no_grad()
def center_logits(model: nn.Module, calibration: torch.Tensor) -> None:
    """Shift the bias of the last Linear (the output layer in every model here) so that the mean logit
    of each class over ``calibration`` is 0.

    Random CNNs with global pooling give every input the same favourite class; centred, the argmax
    depends on the input, so a test that compares predictions compares something.
    """
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    head.bias.sub_(model(calibration).mean(dim=0))


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int, calibration: torch.Tensor) -> None:
    """Give every BatchNorm of ``model`` running statistics near, but not at, those of real activations.

    The statistics are first measured on ``calibration`` (so activations stay O(1) and the output depends on
    the input, as in a trained network), then perturbed: means shifted by up to about a third of a standard
    deviation, variances scaled by [0.5, 2); scales are drawn from [0.5, 1.5) and shifts from about ±0.4.
    A fold that forgets or misplaces one term is therefore visibly wrong. Changes only the BatchNorms.
    """
    norms = [m for m in model.modules() if isinstance(m, _BATCH_NORMS)]
    if not norms:
        return
    was_training = model.training
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: after one batch, exactly that batch's statistics
        norm.train()
    model(calibration)
    gen = torch.Generator().manual_seed(seed)
    for norm in norms:
        n = norm.num_features
        std = norm.running_var.sqrt()
        norm.running_mean.add_(0.3 * std * torch.randn(n, generator=gen))
        norm.running_var.mul_(0.5 + 1.5 * torch.rand(n, generator=gen))
        norm.weight.copy_(0.5 + torch.rand(n, generator=gen))
        norm.bias.copy_(0.2 * torch.randn(n, generator=gen))
        norm.momentum = 0.1
        norm.num_batches_tracked.zero_()
    model.train(was_training)


class ZooModel(nn.Module):
    """Base of the test models: the input shape and a seeded example input."""

    input_shape: tuple[int, ...] = ()

    def _finish(self, seed: int) -> None:
        """Draw the weights, set the BatchNorms, centre the logits (each from its own seed); switch to eval."""
        he_init(self, seed)
        calibration = self.example_input(batch=CALIBRATION_BATCH, seed=seed + 2)
        randomize_batchnorm(self, seed + 1, calibration)
        self.eval()
        center_logits(self, calibration)

    def example_input(self, batch: int = 4, seed: int = 0) -> torch.Tensor:
        """A float32 batch of shape (batch, *input_shape) drawn uniformly from [0, 1)."""
        gen = torch.Generator().manual_seed(seed)
        return torch.rand((batch, *self.input_shape), generator=gen)


class TinyMLP(ZooModel):
    """Linear 8 -> 16, ReLU, Linear 16 -> 4: the smallest model that converts to a two-layer SNN."""

    input_shape = (8,)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with _seeded(seed):
            self.fc1 = nn.Linear(8, 16)
            self.relu = nn.ReLU()
            self.fc2 = nn.Linear(16, 4)
        self._finish(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class VGGish(ZooModel):
    """VGG-BN in small: nested Sequential conv-BN-ReLU blocks, MaxPool2d, then Flatten/Dropout/Linear.

    3x16x16 -> 8x16x16 -> 8x8x8 -> 16x4x4 -> 32x2x2 -> 128 -> 32 -> 10.
    """

    input_shape = (3, 16, 16)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with _seeded(seed):
            self.features = nn.Sequential(
                _conv_bn_relu(3, 8),
                _conv_bn_relu(8, 8),
                nn.MaxPool2d(2),
                _conv_bn_relu(8, 16),
                nn.MaxPool2d(2),
                _conv_bn_relu(16, 32),
                nn.MaxPool2d(kernel_size=2, stride=2),
            )
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Dropout(0.5),
                nn.Linear(32 * 2 * 2, 32),
                nn.ReLU(inplace=True),
                nn.Dropout(0.5),
                nn.Linear(32, 10),
            )
        self._finish(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Residual(enum.Enum):
    """How a BasicBlock adds its shortcut: the three spellings found in real ResNet code."""

    OPERATOR = "out + identity"
    TORCH_ADD = "torch.add(out, identity)"
    INPLACE = "out += identity"  # torchvision's spelling


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN, plus the input (or its 1x1 conv-BN projection), then ReLU.

    The one ReLU module is called twice, as in torchvision.
    """

    def __init__(self, cin: int, cout: int, stride: int, residual: Residual) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual is Residual.OPERATOR:
            out = out + identity
        elif self.residual is Residual.TORCH_ADD:
            out = torch.add(out, identity)
        else:
            out += identity
        return self.relu(out)


class ResNet18ish(ZooModel):
    """ResNet-18's layout (stem, four stages of two BasicBlocks, global average pool, fc) at widths 8-64.

    3x16x16 -> 8x16x16 -> 16x8x8 -> 32x4x4 -> 64x2x2 -> 64 -> 10. The blocks cycle through the three
    `Residual` spellings; the first block of stages 2-4 has a strided 1x1 conv-BN shortcut.
    """

    input_shape = (3, 16, 16)
    widths = (8, 16, 32, 64)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        spellings = list(Residual)
        with _seeded(seed):
            self.conv1 = nn.Conv2d(3, self.widths[0], 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(self.widths[0])
            self.relu = nn.ReLU(inplace=True)
            stages = []
            cin = self.widths[0]
            for i, cout in enumerate(self.widths):
                stride = 1 if i == 0 else 2
                stages.append(
                    nn.Sequential(
                        BasicBlock(cin, cout, stride, spellings[(2 * i) % 3]),
                        BasicBlock(cout, cout, 1, spellings[(2 * i + 1) % 3]),
                    )
                )
                cin = cout
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(self.widths[-1], 10)
        self._finish(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class Conv1dNet(ZooModel):
    """1-D convolutions with stride, dilation, groups and depthwise groups; BatchNorm1d; clipped activations.

    4x32 -> 8x16 (stride 2) -> 16x16 (dilation 2, groups 2) -> 16x8 (depthwise, stride 2) -> 128 -> 10.
    The activations are the three ways of writing a clip: ReLU6, Hardtanh(0, 2) and torch.clamp(0, 4).
    """

    input_shape = (4, 32)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with _seeded(seed):
            self.conv1 = nn.Conv1d(4, 8, 5, stride=2, padding=2)
            self.bn1 = nn.BatchNorm1d(8)
            self.act1 = nn.ReLU6()
            self.conv2 = nn.Conv1d(8, 16, 3, padding=2, dilation=2, groups=2)
            self.bn2 = nn.BatchNorm1d(16)
            self.act2 = nn.Hardtanh(min_val=0.0, max_val=2.0)
            self.conv3 = nn.Conv1d(16, 16, 3, stride=2, padding=1, groups=16)
            self.fc = nn.Linear(16 * 8, 10)
        self._finish(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = torch.clamp(self.conv3(x), 0.0, 4.0)
        return self.fc(torch.flatten(x, 1))


class ConcatNet(ZooModel):
    """Two branches joined by torch.cat, twice (channels of a feature map, then features of vectors).

    Uses functional F.relu, `x.view(x.size(0), -1)` and `reshape(-1, n)` instead of modules.
    2x8x8 -> cat(6x8x8, 4x8x8) -> 10x4x4 -> 160 -> cat(32, 16) -> 10.
    """

    input_shape = (2, 8, 8)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with _seeded(seed):
            self.branch_a = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6))
            self.branch_b = nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4))
            self.pool = nn.AvgPool2d(2)
            self.fc_a = nn.Linear(160, 32)
            self.fc_b = nn.Linear(160, 16)
            self.head = nn.Linear(48, 10)
        self._finish(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(torch.cat([self.branch_a(x), self.branch_b(x)], dim=1))
        y = self.pool(y)
        flat = y.view(y.size(0), -1)
        h = torch.cat((F.relu(self.fc_a(flat)), F.relu(self.fc_b(flat))), 1)
        return self.head(h.reshape(-1, 48))


class ModuleListNet(ZooModel):
    """Linear-BatchNorm1d-ReLU layers held in two ModuleLists and applied in a Python loop.

    16 -> 32 -> 32 -> 32 -> 10, with torch.relu (the function) as the activation.
    """

    input_shape = (16,)

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        widths = (16, 32, 32, 32)
        with _seeded(seed):
            self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
            self.norms = nn.ModuleList(nn.BatchNorm1d(b) for b in widths[1:])
            self.head = nn.Linear(widths[-1], 10)
        self._finish(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms, strict=True):
            x = torch.relu(norm(linear(x)))
        return self.head(x)


# Every test model, for parametrised tests.
ALL_MODELS: tuple[type[ZooModel], ...] = (TinyMLP, VGGish, ResNet18ish, Conv1dNet, ConcatNet, ModuleListNet)

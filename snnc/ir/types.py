"""Value types of the snnc IR: shape (without batch), dtype and signal kind.

Text form: ``analog[1,8,8]``, ``spike[16]``, ``burst<4>[16,8,8]``; a dtype other than
``f32`` is appended as ``xi8`` / ``xi32``: ``analog[10]xi32``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import KW_ONLY, dataclass

from snnc.errors import ParseError


class DType(enum.Enum):
    F32 = "f32"
    I8 = "i8"
    I32 = "i32"


class Signal(enum.Enum):
    """What a value carries per element and timestep."""

    ANALOG = "analog"  # real numbers: ANN activations, currents, direct-coded input
    SPIKE = "spike"  # 0/1 events
    BURST = "burst"  # integers 0..B (multi-spike / AdaFire neurons); -B..B with negative spikes


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    signal: Signal = Signal.ANALOG
    _: KW_ONLY
    burst: int = 1  # B for burst<B>; 1 otherwise
    dtype: DType = DType.F32

    @property
    def is_event(self) -> bool:
        return self.signal in (Signal.SPIKE, Signal.BURST)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def channels(self) -> int:
        return self.shape[0] if self.shape else 1

    def with_shape(self, shape: tuple[int, ...]) -> TensorType:
        return TensorType(tuple(shape), self.signal, burst=self.burst, dtype=self.dtype)

    def __str__(self) -> str:
        kind = f"burst<{self.burst}>" if self.signal is Signal.BURST else self.signal.value
        dims = ",".join(str(d) for d in self.shape)
        suffix = "" if self.dtype is DType.F32 else f"x{self.dtype.value}"
        return f"{kind}[{dims}]{suffix}"


def analog(*shape: int) -> TensorType:
    return TensorType(tuple(shape))


def spike(*shape: int) -> TensorType:
    return TensorType(tuple(shape), Signal.SPIKE)


def burst(b: int, *shape: int) -> TensorType:
    return TensorType(tuple(shape), Signal.BURST, burst=b) if b > 1 else spike(*shape)


_TYPE_RE = re.compile(r"^(analog|spike|burst<(\d+)>)\[(\s*\d+(?:\s*,\s*\d+)*\s*)?\](?:x(f32|i8|i32))?$")


def parse_type(text: str) -> TensorType:
    m = _TYPE_RE.match(text.strip())
    if not m:
        raise ParseError(f"malformed type '{text}'; expected e.g. analog[1,8,8], spike[16], burst<4>[16]")
    kind, b, dims, dt = m.groups()
    shape = tuple(int(d) for d in dims.split(",")) if dims else ()
    if any(d < 1 for d in shape):
        raise ParseError(f"malformed type '{text}': dimensions must be >= 1")
    dtype = DType(dt) if dt else DType.F32
    if kind.startswith("burst"):
        if int(b) < 2:
            raise ParseError(f"malformed type '{text}': burst<B> needs B >= 2 (burst<1> is spike)")
        return TensorType(shape, Signal.BURST, burst=int(b), dtype=dtype)
    return TensorType(shape, Signal(kind), burst=1, dtype=dtype)

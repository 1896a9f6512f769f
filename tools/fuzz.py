"""Mutation fuzzer for snnc's file readers: every malformed input must be a clean snnc error.

    python tools/fuzz.py --target snnir --count 100000 --seed 0 --crash-dir fuzz-crashes

Targets (each reads its input the way ``snnc compile`` / ``snnc opt`` do):

* ``snnir``: textual IR bytes -> ``decode_text`` + ``parse_graph`` (what ``load_graph`` does), and every
  accepted text must print and parse back to an equal graph.  Parse only, no torch: ~0.3 ms an input.
  The corpus is ``tests/corpus/snnir/seeds/*.snnir`` (printed from the digits models, the test-model zoo
  and their converted SNNs; regenerate with ``--make-seeds``, which needs torch) plus every other
  ``.snnir`` file in the repository.
* ``sidecar``: ``params.safetensors`` bytes -> ``load_params``.  ~0.1 ms an input.
* ``nir``: NIR (HDF5) files written with ``snnc.formats.nir.to_nir`` + ``nir.write``, mutated as bytes and
  as HDF5 structure (datasets replaced, deleted, retyped; node types and edges changed), read with
  ``load_model`` (the ``.nir`` branch of ``snnc compile``) and verified.  ~40 ms an input (h5py, nir.read).
* ``model``: ``examples/digits/*.pt2`` and ``*.pt`` mutated as bytes and as zip members, and the digits
  models exported to ``.onnx`` (TorchScript and dynamo exporters, written at start-up) mutated as bytes
  and as protobuf structure (op types, wiring, attributes, initializers, shapes, opset, external data),
  read with ``load_model``.  ~10-30 ms an input (most fail the archive or ONNX checks).

``make fuzz`` runs 100,000 inputs per target, seed 0: snnir ~1 min, sidecar ~20 s, nir ~70 min, model
~25 min of one core.

Mutations are seeded and deterministic: the same ``--seed`` and ``--count`` give the same inputs.  Any
exception that is not a :class:`snnc.errors.SnncError` is a crash; crashes are grouped into classes
(exception type + the innermost snnc function it escaped from), and for each class one example,
minimised by deleting chunks while the crash stays in its class, is written to ``--crash-dir``.
Exit status 1 when there was a crash.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "tests" / "corpus" / "snnir" / "seeds"
sys.path.insert(0, str(ROOT))

from snnc.errors import SnncError  # noqa: E402

# ---------------------------------------------------------------------------------------------------------
# mutations of bytes and text

SPECIAL_TOKENS: list[bytes] = [
    b"[" * 1000,
    b"[" * 65 + b"1" + b"]" * 65,
    b"[" * 64 + b"]" * 64,
    b"9" * 5000,
    b"-" + b"9" * 4301,
    b"18446744073709551616",
    b"9223372036854775808",
    b"0" * 30 + b"1",
    b"1e999",
    b"-1e999",
    b"1e-999",
    b"." + b"5" * 5000,
    b"nan",
    b"-nan",
    b"inf",
    b"-inf",
    b"+1",
    b"0x10",
    b'"\\q"',
    b'"\\u12"',
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'"\\x41"',
    b'"\\',
    b'"',
    b'"\x01"',
    b'"a\nb"',
    b"\\",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\x00",
    "é".encode(),
    "\u2028".encode(),
    "١٢".encode(),
    "🧠".encode(),
    b"\r",
    b"\t",
    b"\x0b",
    b"//",
    b"%",
    b"@",
    b"%x",
    b"%0",
    b"{",
    b"}",
    b"(",
    b")",
    b"[",
    b"]",
    b"<",
    b">",
    b",",
    b"=",
    b":",
    b"{}",
    b"[]",
    b"()",
    b"true",
    b"false",
    b"graph",
    b"output",
    b"params",
    b"loc",
    b"attributes",
    b"burst<1>",
    b"burst<99999999999999999999999>",
    b"analog[0]",
    b"analog[]",
    b"spike[1]xi8",
    b"xf64",
    b" {p = 1} ",
    b" params {weight = 1} ",
    b' loc("x")',
    b' loc("\\u00e9")',
]

_TOKEN_RE = re.compile(rb'"(?:[^"\\\n]|\\.)*"|[%@]?[A-Za-z0-9_.\-]+|[^\s]')


def mutate_text(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """One to three random edits of a textual input."""
    for _ in range(rng.randint(1, 3)):
        data = rng.choice(_TEXT_MUTATORS)(rng, data, corpus)
    return data


def _flip(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(b))
        b[i] = rng.randrange(256) if rng.random() < 0.5 else b[i] ^ (1 << rng.randrange(8))
    return bytes(b)


def _insert(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    i = rng.randrange(len(data) + 1)
    return data[:i] + rng.choice(SPECIAL_TOKENS) + data[i:]


def _replace_token(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """A token replaced by a special token, or by a token of the corpus (an op, attribute or type name...)."""
    tokens = [m.span() for m in _TOKEN_RE.finditer(data)]
    if not tokens:
        return _insert(rng, data, corpus)
    start, end = rng.choice(tokens)
    if rng.random() < 0.5:
        donor = rng.choice(corpus)
        spans = [m.span() for m in _TOKEN_RE.finditer(donor)]
        a, b = rng.choice(spans) if spans else (0, 0)
        return data[:start] + donor[a:b] + data[end:]
    return data[:start] + rng.choice(SPECIAL_TOKENS) + data[end:]


def _delete_token(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    tokens = [m.span() for m in _TOKEN_RE.finditer(data)]
    if not tokens:
        return data
    start, end = rng.choice(tokens)
    return data[:start] + data[end:]


def _truncate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _lines(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    lines = data.split(b"\n")
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    how = rng.randrange(4)
    if how == 0:
        lines.insert(j, lines[i])  # duplicate a line
    elif how == 1:
        del lines[i]
    elif how == 2:
        lines[i], lines[j] = lines[j], lines[i]
    else:
        other = rng.choice(corpus).split(b"\n")
        lines.insert(j, rng.choice(other))  # splice a line of another input
    return b"\n".join(lines)


_TEXT_MUTATORS: list[Callable[[random.Random, bytes, list[bytes]], bytes]] = [
    _flip,
    _insert,
    _insert,
    _replace_token,
    _replace_token,
    _replace_token,
    _delete_token,
    _truncate,
    _lines,
    _lines,
]


def mutate_binary(rng: random.Random, data: bytes) -> bytes:
    """Byte-level edits of a binary file: flips, truncation, zeroed or duplicated ranges."""
    b = bytearray(data)
    how = rng.randrange(5)
    if how == 0 and b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif how == 1:
        del b[rng.randrange(len(b) + 1) :]
    elif how == 2 and b:
        i = rng.randrange(len(b))
        b[i : i + rng.randint(1, 64)] = bytes(min(len(b) - i, 64))
    elif how == 3 and b:
        i = rng.randrange(len(b))
        b[i:i] = b[i : i + rng.randint(1, 256)]
    elif b:
        i = rng.randrange(len(b))
        b[i : i + 8] = rng.choice([b"\xff" * 8, (2**63).to_bytes(8, "little"), (1 << 40).to_bytes(8, "little")])
    return bytes(b)


# ---------------------------------------------------------------------------------------------------------
# running and classifying


@dataclass
class Crash:
    key: str
    data: bytes
    trace: str
    count: int = 0


@dataclass
class Result:
    inputs: int = 0
    rejected: int = 0
    accepted: int = 0
    crashes: dict[str, Crash] = field(default_factory=dict)
    rejections: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def crashed(self) -> int:
        return sum(c.count for c in self.crashes.values())


class RoundTripError(Exception):
    """An accepted input that does not print and parse back to an equal graph (a bug, not a user error)."""


def crash_key(exc: BaseException) -> str:
    """The crash class: exception type and the innermost frame in snnc (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/snnc/" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].name}" if ours else "?"
    return f"{type(exc).__name__} in {where}"


def classify(run_one: Callable[[bytes], object], data: bytes) -> tuple[str, str | None]:
    """('accepted' | 'rejected' | 'crash', crash key or rejection kind)."""
    try:
        run_one(data)
    except SnncError as e:
        return "rejected", type(e).__name__
    except (Exception, RecursionError, MemoryError) as e:  # noqa: BLE001 - classifying anything is the point
        return "crash", crash_key(e)
    return "accepted", None


def minimise(run_one: Callable[[bytes], object], data: bytes, key: str, budget: int = 3000) -> bytes:
    """Delta debugging by deletion: drop chunks (halves down to single bytes) while the crash keeps its key."""
    tries = 0
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and tries < budget:
        i, changed = 0, False
        while i < len(data) and tries < budget:
            candidate = data[:i] + data[i + chunk :]
            tries += 1
            outcome, got = classify(run_one, candidate)
            if outcome == "crash" and got == key:
                data, changed = candidate, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return data


def fuzz(
    run_one: Callable[[bytes], object],
    corpus: list[bytes],
    mutate: Callable[[random.Random, bytes], bytes],
    count: int,
    seed: int,
    minimise_budget: int = 3000,
    progress_every_s: float | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Result:
    """Run inputs ``0 … count − 1``; input ``i`` is drawn with its own generator, seeded by
    ``(seed, i)``, so that it does not depend on the inputs before it.  ``shard = (k, n)`` runs only
    the inputs with ``i % n == k``: n processes with k = 0 … n − 1 run exactly the inputs of one
    process with (0, 1), in parallel (``make -j2 fuzz``).  ``progress_every_s``: a one-line status on
    stderr at most this often, so that a long run's log shows how far it is."""
    k, n = shard
    mine = range(k, count, n)
    result = Result()
    start = last_status = time.perf_counter()
    for i in mine:
        if progress_every_s is not None and time.perf_counter() - last_status >= progress_every_s:
            last_status = time.perf_counter()
            print(f"  {result.inputs:,}/{len(mine):,} inputs, {result.crashed} crashes, "
                  f"{last_status - start:.0f} s", file=sys.stderr, flush=True)
        rng = random.Random(f"{seed}/{i}")  # str seeds hash with SHA-512: the same in every process
        data = mutate(rng, rng.choice(corpus))
        result.inputs += 1
        outcome, key = classify(run_one, data)
        if outcome == "accepted":
            result.accepted += 1
        elif outcome == "rejected":
            result.rejected += 1
            result.rejections[key or "?"] += 1
        else:
            assert key is not None
            crash = result.crashes.get(key)
            if crash is None:
                try:
                    run_one(data)
                except BaseException:  # noqa: BLE001
                    trace = traceback.format_exc()
                else:
                    trace = "(did not crash again: flaky)"
                small = minimise(run_one, data, key, minimise_budget) if minimise_budget else data
                crash = result.crashes[key] = Crash(key, small, trace)
            crash.count += 1
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------------------
# targets


def snnir_corpus() -> list[bytes]:
    files = sorted(SEEDS.glob("*.snnir"))
    files += sorted(
        p for p in ROOT.rglob("*.snnir")
        if ".venv" not in p.parts and "corpus" not in p.parts and not any(s.startswith(".") for s in p.parts)
    )
    if not files:
        raise SystemExit(f"no .snnir seeds in {SEEDS}; run tools/fuzz.py --make-seeds")
    return [p.read_bytes() for p in files]


def parse_snnir(data: bytes) -> object:
    """What ``load_graph`` does with the bytes of a ``.snnir`` file, then the round-trip law."""
    from snnc.ir import parse_graph, print_graph
    from snnc.ir.serialize import decode_text

    graph = parse_graph(decode_text(data, "fuzz.snnir"), "fuzz.snnir")
    text = print_graph(graph)
    again = parse_graph(text)
    if again != graph or print_graph(again) != text:
        raise RoundTripError("accepted text does not round-trip through print/parse")
    return graph


def snnir_target(args: argparse.Namespace) -> tuple[Callable[[bytes], object], list[bytes], Callable]:
    corpus = snnir_corpus()
    return parse_snnir, corpus, lambda rng, data: mutate_text(rng, data, corpus)


def _write_to(directory: Path, name: str) -> Callable[[bytes], Path]:
    def write(data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    return write


def sidecar_target(args: argparse.Namespace) -> tuple[Callable[[bytes], object], list[bytes], Callable]:
    import numpy as np

    from snnc.ir.serialize import load_params, save_params

    directory = Path(tempfile.mkdtemp(prefix="snnc-fuzz-"))
    path = directory / "params.safetensors"
    save_params(
        {
            "w": np.arange(12, dtype=np.float32).reshape(3, 4),
            "b": np.ones(3, np.float32),
            "i": np.arange(3, dtype=np.int64),
            "s": np.array(2.5, np.float32),
        },
        path,
    )
    corpus = [path.read_bytes()]
    write = _write_to(directory, "fuzz.safetensors")
    return lambda data: load_params(write(data)), corpus, mutate_sidecar


def mutate_sidecar(rng: random.Random, data: bytes) -> bytes:
    if rng.random() < 0.5:
        return mutate_binary(rng, data)
    n = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + n]
    header = _replace_token(rng, header, [header])  # JSON header: numbers, dtypes, shapes, offsets
    return len(header).to_bytes(8, "little") + header + data[8 + n :]


# -- nir --


def nir_graphs() -> list:
    """Small graphs that NIR can express, with seeded parameters (tests/nir_graphs.py)."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from nir_graphs import nir_graphs as graphs

    return graphs(np.random.default_rng(0))


_NIR_TYPES = ["Affine", "Linear", "Conv2d", "Conv1d", "IF", "LIF", "CubaLIF", "Scale", "Flatten", "SumPool2d",
              "AvgPool2d", "Input", "Output", "Delay", "Threshold", "NIRGraph", "Bogus", ""]


def mutate_nir(rng: random.Random, data: bytes) -> bytes:
    """Half byte-level edits, half edits of the HDF5 structure through h5py."""
    if rng.random() < 0.3:
        return mutate_binary(rng, data)
    import h5py
    import numpy as np

    with h5py.File(io.BytesIO(data), "r") as src:
        buf = io.BytesIO()
        with h5py.File(buf, "w") as dst:
            for key in src.keys():
                src.copy(src[key], dst, key)
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            for _ in range(rng.randint(1, 3)):
                _mutate_h5(rng, dst, np)
        return buf.getvalue()


def _mutate_h5(rng: random.Random, f, np) -> None:
    import h5py

    datasets: list[str] = []
    groups: list[str] = []

    def visit(name: str, obj) -> None:
        (datasets if isinstance(obj, h5py.Dataset) else groups).append(name)

    f.visititems(visit)
    if not datasets:
        return
    name = rng.choice(datasets)
    old = f[name]
    how = rng.randrange(9)
    if how == 0:
        del f[name]
        return
    if how == 1 and groups:
        del f[rng.choice(groups)]
        return
    if name.endswith("type") or old.dtype.kind in "SOU":
        if rng.random() < 0.7:
            del f[name]
            f[name] = rng.choice(_NIR_TYPES).encode()
            return
    shape = old.shape
    if how == 2:
        new = np.full(shape, rng.choice([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30]), np.float64)
    elif how == 3:
        rank = rng.randrange(4)
        new = np.ones(tuple(rng.randint(0, 3) for _ in range(rank)), np.float32)
    elif how == 4:
        new = np.zeros(shape, np.int64) - rng.randint(0, 3)
    elif how == 5:
        new = np.array(b"garbage")
    elif how == 6:
        new = np.array(rng.choice([0, -1, 2**40, 3]), np.int64)
    elif how == 7 and "edges" in name:
        new = np.array([[b"nowhere", b"output"], [b"input", b"input"]])[: rng.randint(0, 2)]
    else:
        new = np.full(shape, rng.choice([0, 1, 2, 100, -5]), np.float32)
    del f[name]
    f[name] = new


def nir_target(args: argparse.Namespace) -> tuple[Callable[[bytes], object], list[bytes], Callable]:
    import nir

    from snnc.formats.nir import to_nir
    from snnc.frontend.files import load_model
    from snnc.ir import verify

    directory = Path(tempfile.mkdtemp(prefix="snnc-fuzz-"))
    corpus = []
    for g in nir_graphs():
        path = directory / f"{g.name}.nir"
        nir.write(str(path), to_nir(g))
        corpus.append(path.read_bytes())
    write = _write_to(directory, "fuzz.nir")

    def run_one(data: bytes) -> object:
        graph = load_model(write(data)).graph
        verify(graph)
        return graph

    return run_one, corpus, mutate_nir


# -- model --


def mutate_zip(rng: random.Random, data: bytes) -> bytes:
    """Half byte-level edits, half a rewritten archive with one member edited, dropped or duplicated."""
    if rng.random() < 0.4:
        return mutate_binary(rng, data)
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        infos = src.infolist()
        victim = rng.randrange(len(infos))
        how = rng.randrange(3)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
            for i, info in enumerate(infos):
                content = src.read(info)
                if i == victim:
                    if how == 0:
                        continue
                    if content[:1] in (b"{", b"[") or info.filename.endswith((".json", ".txt")):
                        content = mutate_text(rng, content, [content])
                    else:
                        content = mutate_binary(rng, content)
                dst.writestr(info.filename, content)
                if i == victim and how == 2:
                    dst.writestr(info.filename + "_copy", content)
        return out.getvalue()


def _onnx_seeds(digits: Path, directory: Path) -> list[Path]:
    """The digits models exported by torch.onnx (TorchScript exporter, dynamic batch; a dynamo export
    with BN kept and its shape arithmetic left in), written once per run into ``directory``."""
    import importlib.util
    import logging

    import torch

    spec = importlib.util.spec_from_file_location("digits_models_fuzz", digits / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    paths = []
    logging.disable(logging.WARNING)
    try:
        for name in ("mlp", "cnn"):
            model = getattr(module, name)()
            model.load_state_dict(torch.load(digits / f"{name}.pt", weights_only=True))
            model.eval()
            x = torch.zeros(2, 1, 8, 8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = directory / f"seed_{name}_legacy.onnx"
                torch.onnx.export(model, (x,), path, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "N"}})
                paths.append(path)
                if name == "cnn":
                    path = directory / f"seed_{name}_dynamo.onnx"
                    torch.onnx.export(model, (x,), path, dynamo=True, optimize=False, verbose=False,
                                      dynamic_shapes=({0: torch.export.Dim("N")},))
                    paths.append(path)
    finally:
        logging.disable(logging.NOTSET)
    return paths


def mutate_onnx(rng: random.Random, data: bytes) -> bytes:
    """A third byte-level edits of the protobuf; the rest one structural edit of the parsed model: a node's
    op type, inputs, outputs or attributes changed, a node dropped or duplicated, an initializer's dims,
    data type or bytes changed, a value's shape changed, the opset or IR version changed."""
    import onnx

    if rng.random() < 0.33:
        return mutate_binary(rng, data)
    try:
        model = onnx.load_from_string(data)
    except Exception:  # noqa: BLE001 - an already-broken input stays a byte-level one
        return mutate_binary(rng, data)
    try:
        _edit_onnx(rng, model)
        return model.SerializeToString()
    except (ValueError, TypeError, IndexError):  # protobuf refuses some edits (e.g. an out-of-range enum)
        return mutate_binary(rng, data)


def _edit_onnx(rng: random.Random, model) -> None:
    import onnx

    graph = model.graph
    names = [n for node in graph.node for n in (*node.input, *node.output)] + [i.name for i in graph.initializer]
    how = rng.randrange(10)
    if how == 0 and graph.node:
        node = rng.choice(graph.node)
        node.op_type = rng.choice(["Conv", "Gemm", "Relu", "MaxPool", "Concat", "Reshape", "Transpose", "Add",
                                   "Mul", "Flatten", "Slice", "Loop", "If", "Foo", "", "Split", "Pad", "Clip"])
    elif how == 1 and graph.node:
        node = rng.choice(graph.node)
        field = node.input if rng.random() < 0.7 or not node.output else node.output
        if field and rng.random() < 0.5:
            field[rng.randrange(len(field))] = rng.choice(names + ["", "missing"])
        elif field and rng.random() < 0.5:
            del field[rng.randrange(len(field))]
        else:
            field.append(rng.choice(names + ["extra"]))
    elif how == 2 and graph.node:
        node = rng.choice(graph.node)
        if node.attribute and rng.random() < 0.7:
            attr = rng.choice(node.attribute)
            if attr.ints:
                attr.ints[rng.randrange(len(attr.ints))] = rng.choice([0, -1, 1, 3, 2**31, -(2**40), 7])
            elif attr.ints is not None and rng.random() < 0.3:
                attr.ints.extend([rng.randint(-3, 9) for _ in range(rng.randint(0, 5))])
            attr.i = rng.choice([0, -1, 1, 2, 5, 2**40])
            attr.f = rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30])
            if rng.random() < 0.2:
                attr.type = rng.randrange(16)
            if rng.random() < 0.2:
                del node.attribute[list(node.attribute).index(attr)]
        else:
            node.attribute.append(onnx.helper.make_attribute(
                rng.choice(["axis", "group", "pads", "strides", "kernel_shape", "perm", "ceil_mode", "alpha"]),
                rng.choice([0, -1, 3, [1, 2], [0, 0, 0, 0, 0], 1.5])))
    elif how == 3 and graph.node:
        i = rng.randrange(len(graph.node))
        if rng.random() < 0.5:
            del graph.node[i]
        else:
            graph.node.insert(rng.randrange(len(graph.node) + 1), graph.node[i])
    elif how == 4 and graph.initializer:
        init = rng.choice(graph.initializer)
        if init.dims and rng.random() < 0.5:
            init.dims[rng.randrange(len(init.dims))] = rng.choice([0, 1, -1, 3, 2**33])
        elif rng.random() < 0.5:
            init.data_type = rng.randrange(25)
        else:
            init.raw_data = mutate_binary(rng, init.raw_data)
    elif how == 5:
        values = [*graph.input, *graph.output, *graph.value_info]
        if values:
            value = rng.choice(values)
            shape = value.type.tensor_type.shape
            if shape.dim and rng.random() < 0.7:
                dim = shape.dim[rng.randrange(len(shape.dim))]
                if rng.random() < 0.5:
                    dim.dim_value = rng.choice([0, 1, 2, 7, 2**40])
                else:
                    dim.dim_param = rng.choice(["N", "M", ""])
            else:
                value.type.tensor_type.elem_type = rng.randrange(25)
    elif how == 6 and model.opset_import:
        model.opset_import[0].version = rng.choice([1, 7, 12, 13, 17, 21, 22, 99])
    elif how == 7:
        model.ir_version = rng.choice([0, 3, 7, 10, 11, 99])
    elif how == 8 and graph.input:
        if rng.random() < 0.5:
            graph.input.append(graph.input[0])
        elif graph.output:
            del graph.output[rng.randrange(len(graph.output))]
    elif graph.initializer:
        init = graph.initializer[rng.randrange(len(graph.initializer))]
        # external data: a location that is absent, outside the model's folder, or a device file
        del init.external_data[:]
        init.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", rng.choice(["w.bin", "../w.bin", "/etc/passwd", "/dev/zero"])),
                           ("offset", rng.choice(["0", "-5", "x"])), ("length", rng.choice(["16", "99999999999"]))):
            entry = init.external_data.add()
            entry.key, entry.value = key, value
        init.ClearField("raw_data")


def model_target(args: argparse.Namespace) -> tuple[Callable[[bytes], object], list[bytes], Callable]:
    from snnc.frontend.files import load_model

    digits = ROOT / "examples" / "digits"
    files = sorted(digits.glob("*.pt2")) + sorted(digits.glob("*.pt"))
    if not files:
        raise SystemExit(f"no model files in {digits}")
    directory = Path(tempfile.mkdtemp(prefix="snnc-fuzz-"))
    files += _onnx_seeds(digits, directory)

    # an input is one byte naming the corpus file it came from (its suffix and architecture), then the file
    def source_of(data: bytes) -> Path:
        return files[data[0] % len(files)] if data else files[0]

    def run_one(data: bytes) -> object:
        source = source_of(data)
        path = directory / f"fuzz{source.suffix}"
        path.write_bytes(data[1:])
        if source.suffix == ".onnx":
            return load_model(path).graph
        # a state dict needs the input shape, as on the command line: without it the weights are never read
        shape = (1, 8, 8) if source.suffix == ".pt" else None
        return load_model(path, arch=f"{digits / 'models.py'}:{source.stem}", input_shape=shape).graph

    def mutate(rng: random.Random, data: bytes) -> bytes:
        if source_of(data).suffix == ".onnx":
            return data[:1] + mutate_onnx(rng, data[1:])
        return data[:1] + mutate_zip(rng, data[1:])

    return run_one, [bytes([i]) + p.read_bytes() for i, p in enumerate(files)], mutate


TARGETS = {"snnir": snnir_target, "sidecar": sidecar_target, "nir": nir_target, "model": model_target}
MINIMISE_BUDGET = {"snnir": 3000, "sidecar": 500, "nir": 150, "model": 30}  # tries per crash class


# ---------------------------------------------------------------------------------------------------------
# seeds for the snnir target (needs torch; run once, commit the files)


def make_seeds() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    from conversion_util import context, digits_model, digits_split, run  # type: ignore[import-not-found]
    from models import ConcatNet, Conv1dNet, ModuleListNet, ResNet18ish, TinyMLP, VGGish  # type: ignore[import-not-found]

    from snnc.frontend.fx import import_module
    from snnc.ir import print_graph

    SEEDS.mkdir(parents=True, exist_ok=True)
    texts: dict[str, str] = {}
    x, y = digits_split("train")
    for arch in ("cnn", "mlp"):
        ann = digits_model(arch)
        texts[f"digits_{arch}_ann"] = print_graph(ann)
        for pipeline in ("ann-to-snn-fast", "ann-to-snn-phase"):
            snn = run(pipeline, ann.copy(), context(x[:256], y[:256], timesteps=8))
            texts[f"digits_{arch}_{pipeline}"] = print_graph(snn)
    for cls in (TinyMLP, VGGish, ResNet18ish, Conv1dNet, ConcatNet, ModuleListNet):
        model = cls()
        graph = import_module(model, model.example_input(batch=1), cls.__name__.lower())
        texts[f"zoo_{cls.__name__.lower()}"] = print_graph(graph)
    del np
    for name, text in texts.items():
        (SEEDS / f"{name}.snnir").write_text(text)
        print(f"wrote {SEEDS / name}.snnir ({len(text.splitlines())} lines)")


# ---------------------------------------------------------------------------------------------------------


def report(target: str, result: Result, crash_dir: Path | None) -> None:
    rate = result.seconds / max(result.inputs, 1) * 1e3
    print(f"target {target}: {result.inputs} inputs in {result.seconds:.1f} s ({rate:.2f} ms each)")
    print(f"  rejected cleanly: {result.rejected}  ({', '.join(f'{k} {v}' for k, v in result.rejections.most_common())})")
    print(f"  accepted:         {result.accepted}")
    print(f"  crashes:          {result.crashed} in {len(result.crashes)} classes")
    for crash in sorted(result.crashes.values(), key=lambda c: -c.count):
        line = f"    {crash.count:6d}  {crash.key}"
        if crash_dir is not None:
            crash_dir.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^A-Za-z0-9_.]+", "_", f"{target}_{crash.key}")
            (crash_dir / f"{stem}.input").write_bytes(crash.data)
            (crash_dir / f"{stem}.txt").write_text(f"{crash.key}\n{crash.data!r}\n\n{crash.trace}")
            line += f"  -> {crash_dir / stem}.input ({len(crash.data)} bytes)"
        print(line)


def _shard(text: str) -> tuple[int, int]:
    k, _, n = text.partition("/")
    try:
        shard = int(k), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N, e.g. 0/2") from None
    if not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: needs 0 <= K < N")
    return shard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(TARGETS), default="snnir")
    parser.add_argument("--count", type=int, default=10000, help="number of mutated inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                        help="run only inputs i with i %% N == K (N processes with K = 0..N-1 cover --count)")
    parser.add_argument("--crash-dir", type=Path, help="write one minimised input per crash class here")
    parser.add_argument("--make-seeds", action="store_true", help=f"regenerate {SEEDS} (needs torch) and exit")
    args = parser.parse_args(argv)
    if args.make_seeds:
        make_seeds()
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore")  # nir and torch warn about the garbage they are fed
    run_one, corpus, mutate = TARGETS[args.target](args)
    result = fuzz(run_one, corpus, mutate, args.count, args.seed, MINIMISE_BUDGET[args.target],
                  progress_every_s=60.0, shard=args.shard)
    k, n = args.shard
    report(args.target if n == 1 else f"{args.target} (shard {k}/{n} of {args.count:,})", result, args.crash_dir)
    return 1 if result.crashes else 0


if __name__ == "__main__":
    sys.exit(main())

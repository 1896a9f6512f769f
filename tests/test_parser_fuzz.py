"""The .snnir reader rejects every malformed input with a ParseError at ``line:column`` (never a traceback).

Each crasher class found by ``tools/fuzz.py`` is a file in ``tests/corpus/snnir/`` with its exact error;
a short seeded fuzz run must find no crash; print/parse round-trips exactly, nan and -0.0 included.
"""

from __future__ import annotations

import importlib.util
import math
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snnc.errors import InputFileError, ParseError
from snnc.ir import Graph, Node, analog, load_graph, load_params, parse_graph, print_graph, save_graph
from snnc.ir import ops as O

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus" / "snnir"
_BAD_ESCAPE = "in a string (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)"


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("snnc_tools_fuzz", ROOT / "tools" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz()

# -- one regression file per crasher class ----------------------------------------------------------------

REJECTED = [
    # (file, line, column, message): each crashed the parser with a non-snnc exception before
    ("invalid_utf8.snnir", 2, 41, "not UTF-8 text (byte 0xe9 at offset 70: invalid continuation byte)"),
    ("deep_nesting.snnir", 2, 93, "nesting deeper than 64 lists"),
    ("bad_escape_attribute.snnir", 2, 33, f"bad escape '\\e' {_BAD_ESCAPE}"),
    ("bad_escape_loc.snnir", 2, 47, f"bad escape '\\u12' {_BAD_ESCAPE}"),
    ("control_char_in_string.snnir", 2, 41, "control character '\\t' in a string; write it as \\u0009"),
    ("newline_in_string.snnir", 2, 37, "unterminated string (a string ends on its line; write a newline as \\n)"),
    ("unterminated_string_at_eof.snnir", 2, 37, "unterminated string"),
    (
        "huge_int_attribute.snnir", 2, 27,
        "integer 99999999999999999999... (5000 digits) does not fit in 64 bits (-2**63 .. 2**64-1)",
    ),
    (
        "huge_int_dimension.snnir", 1, 23,
        "integer 44444444444444444444... (4301 digits) does not fit in 64 bits (-2**63 .. 2**64-1)",
    ),
    ("int_over_64_bits.snnir", 2, 27, "integer 18446744073709551616 does not fit in 64 bits (-2**63 .. 2**64-1)"),
    (
        "huge_burst.snnir", 2, 27,
        "integer 77777777777777777777... (30 digits) does not fit in 64 bits (-2**63 .. 2**64-1)",
    ),
    ("float_overflow.snnir", 2, 28, "number 1e999 is out of range for a 64-bit float (write inf or -inf)"),
    # accepted before (\d matched any Unicode digit) and printed back as a different text
    ("unicode_digits.snnir", 1, 21, "unexpected character '\u0661'"),
    # 64 nested lists still parse; the value is then refused by the attribute's type
    (
        "nesting_64_then_type_error.snnir", 2, 21,
        "reshape.shape: expected an integer, got " + "[" * 62 + "16" + "]" * 62,
    ),
]

ACCEPTED = [
    "ok_nan_attribute.snnir",  # printed and parsed before, but the graphs compared unequal
    "ok_byte_order_mark.snnir",
    "ok_lone_surrogate_escape.snnir",
    "ok_uint64_seed.snnir",
]


@pytest.mark.parametrize(("name", "line", "col", "message"), REJECTED, ids=[r[0] for r in REJECTED])
def test_regression_file_is_a_parse_error_at_line_and_column(name: str, line: int, col: int, message: str) -> None:
    path = CORPUS / name
    with pytest.raises(ParseError) as info:
        load_graph(path)
    assert str(info.value) == f"{path}:{line}:{col}: {message}"
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    with pytest.raises(ParseError, match="^" + re.escape(f"line {line}:{col}: {message}") + "$"):
        parse_graph(text)


@pytest.mark.parametrize("name", ACCEPTED)
def test_regression_file_is_accepted_and_round_trips(name: str) -> None:
    graph = load_graph(CORPUS / name)
    text = print_graph(graph)
    assert parse_graph(text) == graph
    assert print_graph(parse_graph(text)) == text


def test_nan_attribute_graph_equals_itself_and_its_parse() -> None:
    graph = load_graph(CORPUS / "ok_nan_attribute.snnir")
    op = graph.nodes[0].op
    assert math.isnan(op.v_th) and math.copysign(1.0, op.v_init) == -1.0
    assert graph == graph.copy() == parse_graph(print_graph(graph))
    other = graph.copy()
    other.nodes[0].op = O.Neuron(v_th=1.0, v_init=-0.0, beta=5e-324)
    assert graph != other


def test_text_with_a_lone_surrogate_round_trips() -> None:
    """Bytes decoded with errors="surrogateescape" (not what load_graph does) still print and parse back."""
    text = (CORPUS / "invalid_utf8.snnir").read_bytes().decode("utf-8", errors="surrogateescape")
    graph = parse_graph(text)
    assert graph.nodes[0].loc == "caf\udce9"
    assert parse_graph(print_graph(graph)) == graph


# -- the fuzzer finds no crash --------------------------------------------------------------------------------


def test_seeded_snnir_fuzz_run_has_no_crash() -> None:
    run_one, corpus, mutate = fuzz.snnir_target(None)
    result = fuzz.fuzz(run_one, corpus, mutate, count=2000, seed=1, minimise_budget=200)
    crashes = {k: (c.count, c.data[:200]) for k, c in result.crashes.items()}
    assert crashes == {}
    assert result.inputs == 2000 and result.rejected > 1000 and result.accepted > 50


def test_fuzz_is_deterministic() -> None:
    _, corpus, mutate = fuzz.snnir_target(None)
    import random

    first = [mutate(random.Random(7), corpus[0]) for _ in range(3)]
    again = [mutate(random.Random(7), corpus[0]) for _ in range(3)]
    assert first == again


def test_shards_run_exactly_the_inputs_of_one_process() -> None:
    """``make -j2 fuzz`` splits a target over two processes: together they must run the same inputs."""
    _, corpus, mutate = fuzz.snnir_target(None)

    def inputs(shard: tuple[int, int]) -> list[bytes]:
        seen: list[bytes] = []
        fuzz.fuzz(seen.append, corpus, mutate, count=40, seed=3, minimise_budget=0, shard=shard)
        return seen

    whole = inputs((0, 1))
    even, odd = inputs((0, 2)), inputs((1, 2))
    assert len(set(whole)) > 30
    assert whole[0::2] == even and whole[1::2] == odd


def test_fuzz_reports_and_minimises_a_crash(tmp_path: Path) -> None:
    def run_one(data: bytes) -> None:
        if b"boom" in data:
            raise KeyError("boom")

    result = fuzz.fuzz(run_one, [b"xx boom yy"], lambda rng, data: data, count=3, seed=0)
    (crash,) = result.crashes.values()
    assert crash.key.startswith("KeyError") and crash.count == 3 and crash.data == b"boom"
    fuzz.report("toy", result, tmp_path)
    assert [p.suffix for p in sorted(tmp_path.iterdir())] == [".input", ".txt"]


def test_seeded_sidecar_fuzz_run_has_no_crash() -> None:
    run_one, corpus, mutate = fuzz.sidecar_target(None)
    result = fuzz.fuzz(run_one, corpus, mutate, count=500, seed=0, minimise_budget=50)
    assert {k: c.count for k, c in result.crashes.items()} == {}


@pytest.mark.parametrize("cut", [0, 7, 8, 60, -1])
def test_truncated_sidecar_is_an_input_file_error(tmp_path: Path, cut: int) -> None:
    graph = parse_graph(print_graph(_scale_graph(2.0)))
    graph.params = {"w": np.arange(6, dtype=np.float32)}
    save_graph(graph, tmp_path)
    sidecar = tmp_path / "params.safetensors"
    sidecar.write_bytes(sidecar.read_bytes()[:cut])
    with pytest.raises(InputFileError, match="not a readable safetensors file"):
        load_params(sidecar)
    with pytest.raises(InputFileError):
        load_graph(tmp_path)


def test_seeded_nir_fuzz_run_has_no_crash() -> None:
    pytest.importorskip("nir")
    run_one, corpus, mutate = fuzz.nir_target(None)
    result = fuzz.fuzz(run_one, corpus, mutate, count=40, seed=3, minimise_budget=0)
    assert {k: c.count for k, c in result.crashes.items()} == {}


# -- print/parse is exact, nan and -0.0 included ---------------------------------------------------------------


def _scale_graph(factor: float, lo: float = 0.0, v_init: float = 0.0) -> Graph:
    graph = Graph("g", [("x", analog(3))])
    graph.nodes = [
        Node("s", O.Scale(factor=factor), ("x",), type=analog(3)),
        Node("c", O.Clip(lo=lo), ("s",), type=analog(3)),
        Node("n", O.Neuron(v_init=v_init), ("c",), type=analog(3)),
    ]
    graph.outputs = ["n"]
    return graph


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(), st.floats(allow_nan=True))
def test_any_float_prints_and_parses_back_exactly(factor: float, lo: float, v_init: float) -> None:
    graph = _scale_graph(factor, lo, v_init)
    text = print_graph(graph)
    parsed = parse_graph(text)
    assert parsed == graph
    assert print_graph(parsed) == text
    for node, again in zip(graph.nodes, parsed.nodes, strict=True):
        for name, value in node.op.attributes().items():
            if isinstance(value, float) and not math.isnan(value):
                assert _bits(getattr(again.op, name)) == _bits(value), name
            elif isinstance(value, float):
                assert math.isnan(getattr(again.op, name))


@pytest.mark.parametrize("path", sorted(fuzz.SEEDS.glob("*.snnir")), ids=lambda p: p.name)
def test_corpus_seeds_round_trip(path: Path) -> None:
    text = path.read_text()
    assert print_graph(parse_graph(text)) == text


def test_a_nir_file_that_crashes_libhdf5_is_a_clean_error():
    """tools/fuzz.py --target nir found a file on which libhdf5 itself segfaults (input 8,110 of seed 0);
    the reader runs in a child process, so snnc reports it instead of dying."""
    pytest.importorskip("nir")
    from snnc.frontend.files import load_model

    crasher = Path(__file__).parent / "corpus" / "nir" / "libhdf5_segfault.nir"
    # on this machine libhdf5 segfaults on it; elsewhere it may raise instead: either way, one clean error
    either = "the HDF5 library crashed reading this file; it is corrupt|not a readable NIR file"
    with pytest.raises(InputFileError, match=either):
        load_model(crasher)
    # and the reader works again afterwards (a new child replaces the dead one)
    with pytest.raises(InputFileError, match=either):
        load_model(crasher)


def test_a_nir_file_on_which_libhdf5_loops_is_a_clean_error_in_bounded_time(tmp_path):
    """tools/fuzz.py --target nir (seed 0) found a file on which h5py's ``Dataset.__getitem__`` never
    returns; the child that reads it is killed after the time limit."""
    nir = pytest.importorskip("nir")
    from snnc.formats.nir import read_nir_file

    hang = Path(__file__).parent / "corpus" / "nir" / "libhdf5_hang.nir"
    # the short limit is for the test; whatever this machine's libhdf5 does with the file (loop, raise
    # or crash), the answer is one clean error
    either = "did not finish in 3 s|the HDF5 library crashed|not a readable NIR file"
    with pytest.raises(InputFileError, match=either):
        read_nir_file(hang, timeout=3.0)
    # the reader works again afterwards (a new child replaces the killed one): a good file reads
    good = tmp_path / "good.nir"
    nir.write(good, nir.NIRGraph.from_list(nir.Linear(weight=np.eye(3, dtype=np.float32))))
    assert set(read_nir_file(good, timeout=60.0).nodes) >= {"input", "output"}


@pytest.mark.parametrize("name", ["metadata_string_leak.nir", "metadata_array_op.nir"])
def test_nir_metadata_of_the_wrong_type_is_ignored_or_a_clean_error(name):
    """tools/fuzz.py --target nir (seed 7) found metadata snnc reads back (``snnc_beta``, ``snnc_op``) of a
    type snnc never writes: a string leak, an array op name.  Such metadata is not snnc's: ignored."""
    pytest.importorskip("nir")
    from snnc.errors import SnncError
    from snnc.frontend.files import load_model

    try:
        load_model(Path(__file__).parent / "corpus" / "nir" / name)
    except SnncError:
        pass


def test_an_encrypted_zip_member_is_a_clean_error():
    """tools/fuzz.py --target model (seed 7) found a .pt whose member claims to be encrypted: zipfile
    raises RuntimeError ('password required'), which is now a damaged archive like any other."""
    run_one, _, _ = fuzz.model_target(None)
    with pytest.raises(InputFileError, match="unreadable|damaged|corrupt"):
        run_one((Path(__file__).parent / "corpus" / "model" / "encrypted_member.input").read_bytes())


def test_an_onnx_string_field_that_is_not_utf8_is_a_clean_error():
    """tools/fuzz.py --target model (seed 3) found an .onnx whose external-data location is not UTF-8:
    protobuf hands such a proto2 string back as bytes, which crashed the path checks."""
    pytest.importorskip("onnx")
    run_one, _, _ = fuzz.model_target(None)
    with pytest.raises(InputFileError, match="is not UTF-8 text"):
        run_one((Path(__file__).parent / "corpus" / "model" / "onnx_string_not_utf8.input").read_bytes())


def test_an_onnx_external_data_location_with_a_nul_byte_is_a_clean_error():
    """tools/fuzz.py --target model (seed 0, shard 0/2) found an .onnx whose external-data location holds
    a NUL byte: resolving the path raised ValueError."""
    pytest.importorskip("onnx")
    run_one, _, _ = fuzz.model_target(None)
    with pytest.raises(InputFileError, match="not a usable file name"):
        run_one((Path(__file__).parent / "corpus" / "model" / "onnx_location_nul_byte.input").read_bytes())


def test_a_pt2_whose_signature_names_a_missing_tensor_is_a_clean_error():
    """tools/fuzz.py --target model (seed 0, shard 0/2) found a .pt2 whose graph signature names a
    parameter ('6.weight') that its weights do not hold: the importer raised KeyError."""
    run_one, _, _ = fuzz.model_target(None)
    with pytest.raises(InputFileError, match="names the tensor '6.weight', which the file does not hold"):
        run_one((Path(__file__).parent / "corpus" / "model" / "pt2_signature_names_a_missing_tensor.input").read_bytes())


def test_seeded_model_fuzz_run_has_no_crash() -> None:
    """The model-file target: .pt2 / .pt archives and .onnx protobufs, mutated as bytes and structure."""
    pytest.importorskip("onnx")
    run_one, corpus, mutate = fuzz.model_target(None)
    assert any(data[1:2] == b"\x08" for data in corpus)  # an ONNX ModelProto starts with its ir_version field
    result = fuzz.fuzz(run_one, corpus, mutate, count=120, seed=5, minimise_budget=0)
    assert {k: c.count for k, c in result.crashes.items()} == {}
    assert result.rejected > 0

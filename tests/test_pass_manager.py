"""The pass manager (DESIGN §4): pipeline strings, registry, verifier between passes, instruments,
user passes (decorator and entry point) and crash reproducers."""

from __future__ import annotations

import enum
import importlib
import io
import textwrap
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from click.testing import CliRunner

import snnc
import snnc.pass_manager as pm
from snnc.cli import main
from snnc.errors import ParseError, PassError, UserError, VerifyError
from snnc.ir import Graph, parse_graph, print_graph
from snnc.ir import ops as O
from snnc.pass_manager import (
    CalibrationData,
    Pass,
    PassContext,
    PassManager,
    PassTiming,
    PipelineFailure,
    PrintIRAfter,
    available_passes,
    parse_pipeline,
    pipeline_string,
    register_pass,
    register_pipeline,
)
from snnc.passes.canonicalize import Canonicalize
from snnc.passes.count_ops import CountOps

IR = textwrap.dedent(
    """\
    graph @g(%x: analog[12]) {
      %d = dropout(%x) : analog[12]
      %l = linear(%d) params {weight = "fc.weight", bias = "fc.bias"} : analog[5]
      %b = batchnorm(%l) params {mean = "bn.running_mean", var = "bn.running_var"} : analog[5]
      %r = relu(%b) : analog[5]
      output %r
    }
    """
)


def _graph() -> Graph:
    g = parse_graph(IR)
    rng = np.random.default_rng(0)
    g.params = {
        "fc.weight": rng.standard_normal((5, 12)).astype(np.float32),
        "fc.bias": rng.standard_normal(5).astype(np.float32),
        "bn.running_mean": rng.standard_normal(5).astype(np.float32),
        "bn.running_var": rng.uniform(0.5, 2, 5).astype(np.float32),
    }
    return g


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the pass and pipeline registries: what a test registers does not leak."""
    monkeypatch.setattr(pm, "PASSES", dict(available_passes()))
    monkeypatch.setattr(pm, "PIPELINES", dict(pm.available_pipelines()))
    return pm


class Mode(enum.Enum):
    FAST = "fast"
    EXACT = "exact-ish"


@dataclass(frozen=True)
class OptionsPass(Pass):
    """A pass with one option of every kind, to check how options parse and print."""

    name: ClassVar[str] = "options-test"
    max_value: float = 1.0
    flag: bool = False
    steps: tuple[int, ...] = (1, 2)
    label: str = "x"
    mode: Mode = Mode.FAST

    def apply(self, ctx: PassContext, graph: Graph) -> None:
        ctx.results[self.name] = self.options()


# ---------------------------------------------------------------------------------------
# pipeline strings


@pytest.mark.parametrize(
    "spec,canonical",
    [
        ("canonicalize", "canonicalize"),
        ("  canonicalize ,fold-bn  ", "canonicalize,fold-bn"),
        ("count-ops{samples=10}", "count-ops{samples=10}"),
        ("count-ops{ samples = 10 }", "count-ops{samples=10}"),
        ("count-ops{samples=256}", "count-ops"),  # a default is not printed
        ("canonicalize,fold-bn,count-ops{samples=3}", "canonicalize,fold-bn,count-ops{samples=3}"),
    ],
)
def test_pipeline_strings_print_back_canonically(spec, canonical):
    passes = parse_pipeline(spec)
    assert pipeline_string(passes) == canonical
    assert parse_pipeline(canonical) == passes
    assert str(PassManager.parse(spec)) == canonical


def test_pipeline_as_a_list():
    passes = parse_pipeline(["canonicalize", "fold-bn,count-ops{samples=4}", CountOps(samples=7)])
    assert passes == [Canonicalize(), pm.PASSES["fold-bn"](), CountOps(samples=4), CountOps(samples=7)]
    assert pipeline_string(passes) == "canonicalize,fold-bn,count-ops{samples=4},count-ops{samples=7}"


def test_options_of_every_kind_parse(registry):
    register_pass(OptionsPass)
    (p,) = parse_pipeline("options-test{max-value=0.5,flag=true,steps=[1;2;4],label=hello,mode=exact-ish}")
    assert p == OptionsPass(max_value=0.5, flag=True, steps=(1, 2, 4), label="hello", mode=Mode.EXACT)
    (q,) = parse_pipeline("options-test{max_value=2,steps=3}")  # snake case accepted; a scalar is a 1-list
    assert q == OptionsPass(max_value=2.0, steps=(3,))
    assert pipeline_string([q]).startswith("options-test{max-value=2.0,")


@pytest.mark.parametrize(
    "option",
    [
        pytest.param(OptionsPass(max_value=0.25, flag=True, label="hello"), id="scalars"),
        pytest.param(
            OptionsPass(steps=(1, 2, 4)),
            id="list",
        ),
        pytest.param(
            OptionsPass(mode=Mode.EXACT),
            id="enum",
        ),
    ],
)
def test_printed_options_parse_back_to_the_same_pass(registry, option):
    register_pass(OptionsPass)
    assert parse_pipeline(pipeline_string([option])) == [option]


@pytest.mark.parametrize(
    "spec,message",
    [
        ("canonicalise", "unknown pass 'canonicalise'; did you mean 'canonicalize'?"),
        ("canonicalize,fold-nb", "unknown pass 'fold-nb'; did you mean 'fold-bn'?"),
        ("zzzz", "unknown pass 'zzzz'"),
        ("count-ops{sampels=3}", "pass 'count-ops' has no option 'sampels'; did you mean 'samples'?"),
        ("count-ops{eps=1e-5}", "pass 'count-ops' has no option 'eps'"),
        ("fold-bn{eps=1e-5}", "pass 'fold-bn' has no option 'eps'"),
        ("count-ops{samples=abc}", "count-ops{samples}: expected an integer, got 'abc'"),
        ("count-ops{samples}", "pass 'count-ops': option 'samples' needs a value (name=value)"),
        ("canonicalize,,fold-bn", "malformed pipeline at column 14: ',fold-bn'"),
        ("canonicalize{", "malformed pipeline at column 1: 'canonicalize{'"),
    ],
)
def test_pipeline_errors_are_exact(spec, message):
    with pytest.raises(ParseError) as err:
        parse_pipeline(spec)
    assert str(err.value) == message
    assert isinstance(err.value, UserError)


def test_named_pipelines_expand_in_place(registry):
    register_pipeline("my-pipe", "canonicalize,fold-bn")
    assert pipeline_string(parse_pipeline("my-pipe,count-ops")) == "canonicalize,fold-bn,count-ops"
    with pytest.raises(ParseError) as err:
        parse_pipeline("my-pipe{x=1}")
    assert str(err.value) == "named pipeline 'my-pipe' takes no options; spell out its passes instead"
    with pytest.raises(ParseError) as err:
        parse_pipeline("my-pip")
    assert str(err.value) == "unknown pass 'my-pip'; did you mean 'my-pipe'?"


# ---------------------------------------------------------------------------------------
# instruments


def test_print_ir_after_named_pass():
    stream = io.StringIO()
    out = PassManager.parse("canonicalize,fold-bn", instruments=[PrintIRAfter(["fold-bn"], stream)]).run(
        _graph()
    )
    assert stream.getvalue() == "// ----- IR after fold-bn -----\n" + print_graph(out)


def test_print_ir_after_all():
    stream = io.StringIO()
    graph = _graph()
    after_canon = PassManager.parse("canonicalize").run(graph)
    out = PassManager.parse("canonicalize,fold-bn", instruments=[PrintIRAfter(["all"], stream)]).run(graph)
    assert stream.getvalue() == (
        "// ----- IR after canonicalize -----\n"
        + print_graph(after_canon)
        + "// ----- IR after fold-bn -----\n"
        + print_graph(out)
    )


def test_pass_timing_records_every_pass():
    timing = PassTiming()
    PassManager.parse("canonicalize,fold-bn,count-ops{samples=2}", instruments=[timing]).run(_graph())
    assert [name for name, _ in timing.times] == ["canonicalize", "fold-bn", "count-ops{samples=2}"]
    assert all(t >= 0 for _, t in timing.times)
    lines = timing.render().splitlines()
    assert lines[0] == "===== pass execution timing ====="
    assert [line.split()[-1] for line in lines[2:]] == [
        "canonicalize",
        "fold-bn",
        "count-ops{samples=2}",
        "total",
    ]


# ---------------------------------------------------------------------------------------
# the verifier between passes; failures name the pass and those before it


def _register_breaker() -> None:
    @register_pass("break-graph")
    def break_graph(ctx: PassContext, graph: Graph) -> None:
        """Point the relu at a value that does not exist (a buggy user pass)."""
        graph.node("r").inputs = ("nope",)


def test_verifier_catches_a_pass_that_breaks_the_graph(registry):
    _register_breaker()
    graph = _graph()
    before = print_graph(graph)
    with pytest.raises(PipelineFailure) as err:
        PassManager.parse("canonicalize,fold-bn,break-graph,count-ops").run(graph)
    assert str(err.value) == (
        "pass 'break-graph' (after canonicalize,fold-bn) failed: relu %r: operand %nope is not defined before its use"
    )
    assert err.value.failing.name == "break-graph"
    assert [p.name for p in err.value.before] == ["canonicalize", "fold-bn"]
    assert isinstance(err.value, PassError) and isinstance(err.value, UserError)
    assert print_graph(graph) == before  # the manager works on copies


def test_first_pass_failure_names_no_earlier_passes(registry):
    _register_breaker()
    with pytest.raises(PipelineFailure) as err:
        PassManager.parse("break-graph").run(_graph())
    assert str(err.value).startswith("pass 'break-graph' failed: ")


def test_verify_each_false_skips_the_verifier(registry):
    _register_breaker()
    out = PassManager.parse("canonicalize,break-graph", verify_each=False).run(_graph())
    assert out.node("r").inputs == ("nope",)


def test_the_input_graph_is_verified_first():
    graph = _graph()
    graph.nodes[0].inputs = ("missing",)
    with pytest.raises(VerifyError) as err:
        PassManager.parse("canonicalize").run(graph)
    assert str(err.value) == "dropout %d: operand %missing is not defined before its use"
    PassManager.parse("count-ops", verify_each=False).run(graph)  # no verifier, no error


def test_reproducer_holds_the_failing_pass_and_ir_that_parses(registry, tmp_path):
    _register_breaker()
    graph = _graph()
    with pytest.raises(PipelineFailure) as err:
        PassManager.parse("canonicalize,break-graph").run(graph)
    path = tmp_path / "repro.snnir"
    err.value.write_reproducer(path)
    text = path.read_text()
    assert text.startswith(
        "// snnc reproducer\n// configuration: -p 'break-graph'\n// error: pass 'break-graph'"
    )
    reproduced = parse_graph(text)
    assert reproduced == PassManager.parse("canonicalize").run(graph)  # the IR the failing pass received
    assert reproduced == err.value.graph


def test_pass_context_names_missing_prerequisites():
    ctx = PassContext()
    with pytest.raises(PassError) as err:
        ctx.require_calibration("calibrate")
    assert str(err.value) == "pass 'calibrate' needs calibration data; pass --calib data.npz"
    ctx = PassContext(calibration=CalibrationData(np.zeros((3, 2), np.float32)))
    with pytest.raises(PassError) as err:
        ctx.require_calibration("finetune", labelled=True)
    assert str(err.value) == "pass 'finetune' needs labelled calibration data (a 'y' array in --calib)"


# ---------------------------------------------------------------------------------------
# user passes: decorator and entry point


def test_user_pass_by_decorator_on_a_function(registry):
    calls = []

    @snnc.register_pass("count-relus")
    def count_relus(ctx: PassContext, graph: Graph) -> None:
        """Count the relus (a user's analysis)."""
        calls.append(graph.name)
        ctx.results["count-relus"] = len(list(graph.ops(O.Relu)))

    assert callable(count_relus) and count_relus.__name__ == "count_relus"  # the function is kept
    assert "count-relus" in available_passes()
    ctx = PassContext()
    PassManager.parse("canonicalize,count-relus").run(_graph(), ctx)
    assert calls == ["g"] and ctx.results["count-relus"] == 1
    assert pipeline_string(parse_pipeline("count-relus")) == "count-relus"
    listing = CliRunner().invoke(main, ["passes"]).stdout
    assert any(
        line.split()[:1] == ["count-relus"] and "Count the relus" in line for line in listing.splitlines()
    )


def test_user_pass_class_with_options(registry):
    register_pass(OptionsPass)
    ctx = PassContext()
    PassManager.parse("options-test{flag=true}").run(_graph(), ctx)
    assert ctx.results["options-test"]["flag"] is True


def test_pass_names_must_be_kebab_case(registry):
    with pytest.raises(ValueError):
        register_pass("My_Pass")(lambda ctx, g: None)


PLUGIN = '''\
from dataclasses import dataclass
from typing import ClassVar

from snnc.pass_manager import Pass


@dataclass(frozen=True)
class Rename(Pass):
    """Rename the graph (a plugin pass found through its entry point)."""

    name: ClassVar[str] = "plugin-rename"
    to: str = "renamed"

    def apply(self, ctx, graph):
        graph.name = self.to
'''


def test_entry_point_plugin_pass(registry, tmp_path, monkeypatch):
    (tmp_path / "snnc_test_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "snnc_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: snnc-test-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[snnc.passes]\nplugin-rename = snnc_test_plugin:Rename\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert "plugin-rename" not in pm.PASSES  # nothing registers it but the entry point
    monkeypatch.setattr(pm, "_DISCOVERED", False)

    assert "plugin-rename" in available_passes()
    assert "canonicalize" in available_passes()  # the built-ins are still there
    out = PassManager.parse("canonicalize,plugin-rename{to=mine}").run(_graph())
    assert out.name == "mine"


# ---------------------------------------------------------------------------------------
# options checked at parse time; crashes inside a pass; duplicate registration


def test_every_bad_option_is_reported_when_the_pipeline_is_parsed():
    """Before any calibration runs: both passes' options are named, in one error."""
    with pytest.raises(PassError) as err:
        parse_pipeline("canonicalize,calibrate{percentile=200},loihi-quantize{weight-bits=9}")
    assert str(err.value) == (
        "pass 'calibrate': percentile=200.0 must be in (0, 100]; "
        "pass 'loihi-quantize': weight-bits=9 must be in 1..8"
    )


def test_building_a_pass_in_python_checks_its_options_too():
    from snnc.passes.calibrate import Calibrate

    with pytest.raises(PassError, match=r"percentile=-1.0 must be in \(0, 100\]"):
        Calibrate(percentile=-1.0)


def test_a_crash_inside_a_pass_names_the_pass_and_keeps_a_reproducer(registry, tmp_path):
    from snnc.pass_manager import PassCrash

    @register_pass("buggy")
    def buggy(ctx: PassContext, graph: Graph) -> None:
        """A user pass with a bug: a KeyError."""
        {}["weight"]

    graph = _graph()
    with pytest.raises(PassCrash) as err:
        PassManager.parse("canonicalize,buggy").run(graph)
    assert str(err.value) == "pass 'buggy' (after canonicalize) crashed: KeyError: 'weight'"
    assert not isinstance(err.value, UserError)  # a bug, not the user's input: exit 1 in the CLI
    assert isinstance(err.value.__cause__, KeyError)
    path = tmp_path / "repro.snnir"
    err.value.write_reproducer(path)
    assert parse_graph(path.read_text()) == PassManager.parse("canonicalize").run(graph)


def test_register_pass_refuses_a_taken_name_unless_asked_to_replace(registry):
    with pytest.raises(PassError, match=r"pass 'canonicalize' is already registered by "
                                        r"snnc.passes.canonicalize.Canonicalize; use register_pass"):
        @register_pass("canonicalize")
        def mine(ctx: PassContext, graph: Graph) -> None:
            """Would shadow the built-in canonicalize."""

    @register_pass("canonicalize", replace=True)
    def replacement(ctx: PassContext, graph: Graph) -> None:
        """Replaces the built-in canonicalize."""

    assert available_passes()["canonicalize"].__doc__ == "Replaces the built-in canonicalize."


def test_the_cli_reports_a_crashing_pass_as_an_internal_error_with_its_reproducer(registry, tmp_path):
    from click.testing import CliRunner

    from snnc.cli import main

    @register_pass("buggy")
    def buggy(ctx: PassContext, graph: Graph) -> None:
        """A user pass with a bug."""
        {}["weight"]

    out, repro = tmp_path / "out", tmp_path / "repro.snnir"
    result = CliRunner().invoke(main, ["compile", "examples/digits/mlp.pt2", "-p", "canonicalize,buggy",
                                       "-o", str(out), "--reproducer", str(repro)])
    assert result.exit_code == 1
    first = result.stderr.splitlines()[0]
    assert first == (f"snnc: internal error: pass 'buggy' (after canonicalize) crashed: KeyError: 'weight'; "
                     f"reproducer written to {repro}")
    assert "Traceback" in result.stderr and "KeyError" in result.stderr.splitlines()[-1]
    assert not out.exists()
    assert repro.read_text().startswith("// snnc reproducer\n// configuration: -p 'buggy'\n")

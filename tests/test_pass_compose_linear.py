"""compose-linear: a conv / linear read by a pointwise one merges into it, exactly."""

from __future__ import annotations

import numpy as np
from conversion_util import SIM, context, graph_from_text, ir, run, uniform_inputs

from snnc.ir import print_graph

BOTTLENECK = """
graph @b(%x: analog[4,6,6]) {
  %dw = conv2d(%x) {padding = [1, 1], groups = 2} params {weight = "dw.weight", bias = "dw.bias"} : analog[4,6,6]
  %pw = conv2d(%dw) params {weight = "pw.weight", bias = "pw.bias"} : analog[3,6,6]
  %r = relu(%pw) : analog[3,6,6]
  %f = flatten(%r) : analog[108]
  %l1 = linear(%f) params {weight = "l1.weight"} : analog[5]
  %l2 = linear(%l1) params {weight = "l2.weight", bias = "l2.bias"} : analog[2]
  output %l2
}
"""

EXPECTED = """
graph @b(%x: analog[4,6,6]) {
  %pw = conv2d(%x) {padding = [1, 1]} params {weight = "pw.weight", bias = "pw.bias"} : analog[3,6,6]
  %r = relu(%pw) : analog[3,6,6]
  %f = flatten(%r) : analog[108]
  %l2 = linear(%f) params {weight = "l2.weight", bias = "l2.bias"} : analog[2]
  output %l2
}
"""




def test_golden_and_exact() -> None:
    g = graph_from_text(BOTTLENECK, params={"pw.weight": np.random.default_rng(1).normal(size=(3, 4, 1, 1))})
    x = uniform_inputs((4, 6, 6), 8)
    out = run("compose-linear", g, context(x))
    assert print_graph(out) == ir(EXPECTED)
    before = SIM.run_ann(g, x)[g.outputs[0]]
    after = SIM.run_ann(out, x)[out.outputs[0]]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_value_with_two_readers_stays() -> None:
    text = """
    graph @r(%x: analog[2,4,4]) {
      %a = conv2d(%x) params {weight = "a.weight"} : analog[2,4,4]
      %b = conv2d(%a) params {weight = "b.weight"} : analog[2,4,4]
      %s = add(%a, %b) : analog[2,4,4]
      output %s
    }
    """
    w = np.ones((2, 2, 1, 1))
    g = graph_from_text(text, params={"a.weight": w, "b.weight": w})
    out = run("compose-linear", g, context(uniform_inputs((2, 4, 4), 2)))
    assert print_graph(out) == print_graph(g)

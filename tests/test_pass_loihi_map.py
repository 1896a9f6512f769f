"""loihi-map: the quantised graph's populations on cores and chips, with calibrated spike rates."""

from __future__ import annotations

import numpy as np
from conversion_util import context, graph_from_text, run, uniform_inputs

from snnc.backends.loihi.mapping import Mapping
from snnc.pass_manager import PassContext

NET = """
graph @m(%x: analog[2,8,8]) attributes {timesteps = 4} {
  %e = encode(%x) : analog[2,8,8]
  %c = conv2d(%e) {padding = [1, 1]} params {weight = "c.weight", bias = "c.bias"} : analog[16,8,8]
  %n = neuron(%c) {reset = "hard", v_th = 0.5} : spike[16,8,8]
  %f = flatten(%n) : spike[1024]
  %l = linear(%f) params {weight = "l.weight"} : analog[40]
  %n2 = neuron(%l) {reset = "hard", v_th = 0.5} : spike[40]
  %o = linear(%n2) params {weight = "o.weight"} : analog[5]
  %r = readout(%o) : analog[5]
  output %r
}
"""


def _mapped(pipeline: str, ctx: PassContext):
    return run("loihi-legalize,loihi-quantize," + pipeline, graph_from_text(NET, seed=7), ctx)


def test_mapping_is_attached_and_within_limits() -> None:
    ctx = context(uniform_inputs((2, 8, 8), 32), timesteps=4)
    out = _mapped("loihi-map", ctx)
    m = out.analyses.get(Mapping)
    assert isinstance(m, Mapping) and m.chip.name == "loihi2" and not m.violations()
    assert m.cores_used >= m.lower_bound >= 1
    # every neuron of every population is placed once; the readout integrator is a population too
    sizes = {"n": 1024, "n2": 40, "o": 5}
    for name, size in sizes.items():
        ranges = m.populations[name]
        assert sum(b - a for a, b, _ in ranges) == size
    summary = ctx.results["loihi-map"]
    assert summary["cores_used"] == m.cores_used and summary["spikes_per_step"] > 0


def test_chip_and_override(tmp_path) -> None:
    """A chip description with 256 neurons per core needs at least 1069 / 256 → 5 cores."""
    cfg = tmp_path / "small.toml"
    cfg.write_text("[core]\nneurons = 256\n")
    ctx = context(uniform_inputs((2, 8, 8), 8), timesteps=4)
    out = _mapped(f"loihi-map{{chip=loihi1,config={cfg}}}", ctx)
    m = out.analyses.get(Mapping)
    assert m.chip.name == "loihi1" and m.chip.core.neurons == 256
    assert m.cores_used >= 5 and max(c.usage[next(iter(c.usage))] for c in m.cores) <= 256


def test_without_calibration_rates_are_zero() -> None:
    ctx = context(uniform_inputs((2, 8, 8), 8), timesteps=4)
    quantised = run("loihi-legalize,loihi-quantize", graph_from_text(NET, seed=7), ctx)
    bare = PassContext(timesteps=4)
    out = run("loihi-map", quantised, bare)
    assert out.analyses.get(Mapping).traffic["spikes_per_step"] == 0.0
    assert any("no calibration data" in n for n in bare.notes)
    np.testing.assert_array_equal(out.params["c.weight"], quantised.params["c.weight"])

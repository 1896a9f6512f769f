"""loihi-map and the target share one simulation of the quantised graph on the calibration samples
(``calibration_run.simulate_calibration``), and never a stale one."""

import numpy as np
from conversion_util import context, graph_from_text, uniform_inputs

from snnc.backends.loihi.calibration_run import simulate_calibration

NET = """
graph @c(%x: analog[4]) attributes {timesteps = 4} {
  %e = encode(%x) : analog[4]
  %l = linear(%e) params {weight = "l.weight", bias = "l.bias"} : analog[3]
  %n = neuron(%l) {reset = "hard", v_th = 0.2} : spike[3]
  %o = linear(%n) params {weight = "o.weight"} : analog[2]
  %r = readout(%o) : analog[2]
  output %r
}
"""


def test_the_same_call_is_simulated_once_and_a_changed_one_again() -> None:
    g = graph_from_text(NET, seed=1)
    x = uniform_inputs((4,), 12, seed=2)
    ctx = context(x, timesteps=4)
    calls = []
    sim = ctx.simulator
    assert sim is not None
    run_snn = sim.run_snn

    def spy(graph, xs, timesteps, *args, **kwargs):
        calls.append(timesteps)
        return run_snn(graph, xs, timesteps, *args, **kwargs)

    sim.run_snn = spy  # type: ignore[method-assign,assignment]
    first = simulate_calibration(ctx, g, x, 4)
    assert simulate_calibration(ctx, g, x.copy(), 4) is first and len(calls) == 1
    assert simulate_calibration(ctx, g.copy(), x, 4).spikes == first.spikes and len(calls) == 1  # copies keep it
    assert first.spikes and np.array_equal(first.predictions, run_snn(g, x, 4).predictions)
    simulate_calibration(ctx, g, x[:6], 4)  # other samples
    simulate_calibration(ctx, g, x[:6], 3)  # other T
    g.params["l.bias"] = g.params["l.bias"] + 0.5  # other parameters
    changed = simulate_calibration(ctx, g, x[:6], 3)
    assert len(calls) == 4 and changed.spikes != first.spikes

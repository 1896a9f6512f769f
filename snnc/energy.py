"""Energy models (DESIGN §6; documented in docs/energy.md).

* ``45nm`` (Horowitz, ISSCC 2014): 4.6 pJ per MAC (synaptic op on analog input),
  0.9 pJ per AC (one spike arriving at one synapse; a burst of n counts n);
* ``1pj_per_spike``: 1 pJ per synaptic event (the D2E paper's model).
The ANN reference is its MACs × 4.6 pJ.
"""

from __future__ import annotations

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
E_SPIKE_PJ = 1.0


def energy_pj(macs: float, sops: float) -> dict[str, float]:
    return {"45nm": E_MAC_PJ * macs + E_AC_PJ * sops, "1pj_per_spike": E_SPIKE_PJ * sops}


def ann_energy_pj(macs: float) -> float:
    return E_MAC_PJ * macs

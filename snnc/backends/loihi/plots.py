"""PNG of a mapping's per-core utilisation of every resource (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .mapping import RESOURCES, Mapping


def plot_utilisation(mapping: Mapping, path: str | Path, max_cores: int = 512) -> Path:
    """Write a heat map (resource x core, fraction of capacity) plus the per-resource mean and maximum.

    With more than ``max_cores`` cores, consecutive cores are pooled (their maximum is shown), so the
    picture stays readable for million-neuron networks.  Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    util = mapping.utilisation()
    n = util.shape[0]
    if n > max_cores:
        per = -(-n // max_cores)
        pad = per * max_cores - n
        util_shown = np.pad(util, ((0, pad), (0, 0))).reshape(max_cores, per, -1).max(axis=1)
        xlabel = f"core (groups of {per}, maximum shown)"
    else:
        util_shown, xlabel = util, "core"
    names = [r.value.replace("_", " ") for r in RESOURCES]
    fig, (ax_map, ax_bar) = plt.subplots(
        1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [4, 1]}, constrained_layout=True
    )
    im = ax_map.imshow(util_shown.T, aspect="auto", interpolation="nearest", vmin=0, vmax=1, cmap="viridis")
    ax_map.set_yticks(range(len(names)), names)
    ax_map.set_xlabel(xlabel)
    ax_map.set_title(
        f"{mapping.chip.name}: {mapping.cores_used} cores on {mapping.chips_used} chip(s), "
        f"lower bound {mapping.lower_bound}"
    )
    fig.colorbar(im, ax=ax_map, label="fraction of core capacity")
    y = np.arange(len(names))
    ax_bar.barh(y - 0.2, util.mean(axis=0) if n else np.zeros(len(names)), height=0.4, label="mean")
    ax_bar.barh(y + 0.2, util.max(axis=0) if n else np.zeros(len(names)), height=0.4, label="max")
    ax_bar.set_yticks(y, names)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1.05)
    ax_bar.axvline(1.0, color="k", lw=0.8)
    ax_bar.legend(loc="lower right", fontsize=8)
    ax_bar.set_xlabel("fraction")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

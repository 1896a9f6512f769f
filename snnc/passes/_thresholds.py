"""Pass helpers (not a pass): the rate quantiser a converted neuron implements, and choosing
thresholds for it.

The quantiser an IF neuron with soft reset and initial membrane ``shift·θ`` implements for a
constant input ``a`` over T steps is ``clamp(floor(T·a/θ + shift), 0, T·B)·θ/T``
(tests/test_conversion_theory.py pins it).
"""

from __future__ import annotations

import numpy as np


def quantise(a: np.ndarray, theta: np.ndarray, timesteps: int, shift: float, bursts: int = 1) -> np.ndarray:
    """What the converted neuron's rate computes for a constant input ``a`` (rows = channels)."""
    theta = np.asarray(theta, dtype=np.float64).reshape(-1, 1)
    levels = np.clip(np.floor(a / theta * timesteps + shift), 0, timesteps * bursts)
    return levels * theta / timesteps


def mse_thresholds(rows: np.ndarray, timesteps: int, shift: float, bursts: int = 1) -> np.ndarray:
    """AdaFire's grid search, one threshold per row of ``rows`` (C, n).

    Candidates θ_i = max/B·(1 − 0.01 i), i = 0..94 (with B = ``bursts`` the top level is B·θ,
    so the grid starts where that level reaches the maximum); picks argmin ‖a − q(a; θ)‖² with
    ``q`` = :func:`quantise`.  A row that is never positive gets θ = 1 (it never fires).
    """
    rows = np.asarray(rows, dtype=np.float64)
    top = rows.max(axis=1, initial=0.0)
    best = top / bursts
    best_err = np.full(rows.shape[0], np.inf)
    for i in range(95):
        theta = np.where(top > 0, top / bursts * (1.0 - 0.01 * i), 1.0)
        err = np.sum((rows - quantise(rows, theta, timesteps, shift, bursts)) ** 2, axis=1)
        better = err < best_err
        best = np.where(better, theta, best)
        best_err = np.where(better, err, best_err)
    return np.where(top > 0, best, 1.0)


def positive_or(values: np.ndarray, fallback: float) -> np.ndarray:
    """Replace non-positive thresholds (channels that never activate) by ``fallback``."""
    values = np.asarray(values, dtype=np.float64).copy()
    values[~(values > 0)] = fallback
    return values

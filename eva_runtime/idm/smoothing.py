"""Temporal smoothing of decoded action sequences (numpy only).

The IDM decodes every frame independently, so its errors are partly independent from frame to frame: a short
centred moving average removes that jitter at the cost of a little lag-free blur. Edges are padded by repeating
the first and last action, so a sequence keeps its length and its end points' level.
"""

from __future__ import annotations

import numpy as np

__all__ = ["moving_average"]


def moving_average(actions: np.ndarray, window: int) -> np.ndarray:
    """(T, D) -> (T, D), centred moving average over `window` (odd, >= 1) steps; window 1 returns a copy."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"smoothing window must be odd and >= 1, got {window}")
    actions = np.asarray(actions, dtype=np.float64)
    if window == 1 or len(actions) == 0:
        return actions.copy()
    pad = window // 2
    padded = np.concatenate([np.repeat(actions[:1], pad, 0), actions, np.repeat(actions[-1:], pad, 0)])
    cumulative = np.cumsum(np.concatenate([np.zeros((1, actions.shape[1])), padded]), axis=0)
    return (cumulative[window:] - cumulative[:-window]) / window

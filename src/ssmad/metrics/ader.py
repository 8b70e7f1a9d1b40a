"""The reference framework's (ADer: MambaAD, Pyramid-Mamba) approximate pixel metrics.

Reproduced for like-for-like comparison with published tables (DESIGN.md §4), computed
without its loops over thresholds but with its exact thresholds and comparisons:
- P-F1max: the class's maps are min-max normalised (in their own dtype), binarised with
  `map > t` for the 21 thresholds t = 0, 0.05, ..., 1 (`np.arange(0, 1 + 1e-3, 0.05)`),
  F1 = 2PR / (P + R + eps) with P = TP / (predicted + eps), R = TP / (positives + eps),
  eps = 1e-8; the maximum over thresholds.
- AU-PRO: thresholds `np.arange(min, max, (max - min) / num_thresholds)` in the maps' dtype,
  binarised with `map > t`; FPR over normal pixels, PRO = mean over the 8-connected regions
  of all masks of their covered fraction; points with FPR < max_fpr are kept, their FPRs
  re-scaled by min-max to [0, 1], and the area taken with the trapezoid rule.
Both count pixels per threshold with one `searchsorted` + `bincount` pass.
"""

from __future__ import annotations

import numpy as np

from ssmad.metrics.regions import label_regions
from ssmad.metrics.undefined import warn_undefined

ADER_EPS = 1e-8
ADER_F1_THRESHOLDS = np.arange(0.0, 1.0 + 1e-3, 0.05)


def _counts_above(values: np.ndarray, thresholds: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """(num_groups, T) int64: per group, the number of values strictly above each threshold.

    values (n,), thresholds (T,) ascending, groups (n,) int64 in [0, num_groups).
    """
    num_thresholds = thresholds.size
    # Number of thresholds strictly below each value: the value counts for t_j with j < that.
    below = np.searchsorted(thresholds, values, side="left")
    histogram = np.bincount(groups * (num_thresholds + 1) + below,
                            minlength=num_groups * (num_thresholds + 1))
    histogram = histogram.reshape(num_groups, num_thresholds + 1)
    above = np.cumsum(histogram[:, ::-1], axis=1)[:, ::-1]
    return above[:, 1:]


def ader_pixel_f1max(masks: np.ndarray, maps: np.ndarray) -> float:
    """ADer's P-F1max. masks (N, H, W) bool, maps (N, H, W) float."""
    low, high = maps.min(), maps.max()
    if not high > low:
        return warn_undefined("P-F1max (ader)", "the anomaly maps are constant")
    normalised = ((maps - low) / (high - low)).reshape(-1)
    counts = _counts_above(normalised, ADER_F1_THRESHOLDS, masks.reshape(-1).astype(np.int64), 2)
    true_pos = counts[1].astype(np.float64)
    predicted = (counts[0] + counts[1]).astype(np.float64)
    positives = float(np.count_nonzero(masks))
    precision = true_pos / (predicted + ADER_EPS)
    recall = true_pos / (positives + ADER_EPS)
    return float(np.max(2.0 * precision * recall / (precision + recall + ADER_EPS)))


def ader_aupro(masks: np.ndarray, maps: np.ndarray, num_thresholds: int = 200, max_fpr: float = 0.3) -> float:
    """ADer's AU-PRO. masks (N, H, W) bool, maps (N, H, W) float."""
    low, high = maps.min(), maps.max()
    if not high > low:
        return warn_undefined("AU-PRO (ader)", "the anomaly maps are constant")
    thresholds = np.arange(low, high, (high - low) / num_thresholds)
    ids, sizes = label_regions(masks)
    if sizes.size == 0 or masks.all():
        return warn_undefined("AU-PRO (ader)", "no anomalous regions or no normal pixels")
    # Group 0: normal pixels; group k: region k.
    counts = _counts_above(maps.reshape(-1), thresholds, ids.reshape(-1).astype(np.int64), sizes.size + 1)
    fprs = counts[0] / float(masks.size - np.count_nonzero(masks))
    pros = (counts[1:] / sizes[:, None].astype(np.float64)).mean(axis=0)
    kept = fprs < max_fpr
    fprs, pros = fprs[kept], pros[kept]
    if fprs.size < 2 or not fprs.max() > fprs.min():
        return warn_undefined("AU-PRO (ader)", "fewer than two distinct FPRs below the limit")
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    direction = -1.0 if np.all(np.diff(fprs) <= 0) else 1.0
    return direction * float(np.sum(np.diff(fprs) * (pros[1:] + pros[:-1]) / 2.0))

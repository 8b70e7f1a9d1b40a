"""The reference framework's (ADer: MambaAD, Pyramid-Mamba) approximate pixel metrics.

Reproduced for like-for-like comparison with published tables (docs/design.md, "Evaluation
protocol"), computed
without its loops over thresholds but with its exact thresholds and comparisons:
- P-F1max: the class's maps are min-max normalised (in their own dtype), binarised with
  `map > t` for the 21 thresholds t = 0, 0.05, ..., 1 (`np.arange(0, 1 + 1e-3, 0.05)`),
  F1 = 2PR / (P + R + eps) with P = TP / (predicted + eps), R = TP / (positives + eps),
  eps = 1e-8; the maximum over thresholds.
- AU-PRO: thresholds `np.arange(min, max, (max - min) / num_thresholds)` in the maps' dtype,
  binarised with `map > t`; FPR over normal pixels, PRO = mean over the 8-connected regions
  of all masks of their covered fraction; points with FPR < max_fpr are kept, their FPRs
  re-scaled by min-max to [0, 1], and the area taken with the trapezoid rule.
Both work on the split pixels of `ssmad.metrics.regions` (normal pixels sorted once):
counts above a threshold are binary searches, not passes over the maps.
"""

from __future__ import annotations

import numpy as np

from ssmad.metrics.regions import PixelScores, split_pixels
from ssmad.metrics.undefined import warn_undefined

ADER_EPS = 1e-8
ADER_F1_THRESHOLDS = np.arange(0.0, 1.0 + 1e-3, 0.05)


def _value_range(pixels: PixelScores):
    """(min, max) of all map values, as scalars of the maps' dtype."""
    values = [pixels.negative_sorted[[0, -1]]] if pixels.negative_sorted.size else []
    if pixels.positive_scores.size:
        values.append(pixels.positive_scores[[pixels.positive_scores.argmin(), pixels.positive_scores.argmax()]])
    joined = np.concatenate(values)
    return joined.min(), joined.max()


def _count_above_monotone(sorted_values: np.ndarray, transform, thresholds: np.ndarray) -> np.ndarray:
    """(T,) int64: how many of `sorted_values` (ascending) have transform(value) > threshold,
    for a non-decreasing `transform`; a vectorised binary search over all thresholds."""
    low = np.zeros(thresholds.size, dtype=np.int64)
    high = np.full(thresholds.size, sorted_values.size, dtype=np.int64)
    searching = low < high
    while searching.any():
        middle = (low + high) // 2
        above = transform(sorted_values[np.minimum(middle, sorted_values.size - 1)]) > thresholds
        high = np.where(searching & above, middle, high)
        low = np.where(searching & ~above, middle + 1, low)
        searching = low < high
    return sorted_values.size - low


def pixel_f1max_from_split(pixels: PixelScores) -> float:
    """ADer's P-F1max from split pixels."""
    low, high = _value_range(pixels)
    if not high > low:
        return warn_undefined("P-F1max (ader)", "the anomaly maps are constant")

    def normalise(values):
        return (values - low) / (high - low)

    positives_normalised = np.sort(normalise(pixels.positive_scores))
    true_pos = _count_above_monotone(positives_normalised, lambda v: v, ADER_F1_THRESHOLDS).astype(np.float64)
    false_pos = _count_above_monotone(pixels.negative_sorted, normalise, ADER_F1_THRESHOLDS)
    precision = true_pos / (true_pos + false_pos + ADER_EPS)
    recall = true_pos / (pixels.positive_scores.size + ADER_EPS)
    return float(np.max(2.0 * precision * recall / (precision + recall + ADER_EPS)))


def aupro_from_split(pixels: PixelScores, num_thresholds: int = 200, max_fpr: float = 0.3) -> float:
    """ADer's AU-PRO from split pixels."""
    low, high = _value_range(pixels)
    if not high > low:
        return warn_undefined("AU-PRO (ader)", "the anomaly maps are constant")
    if pixels.region_sizes.size == 0 or pixels.negative_sorted.size == 0:
        return warn_undefined("AU-PRO (ader)", "no anomalous regions or no normal pixels")
    thresholds = np.arange(low, high, (high - low) / num_thresholds)
    num_neg = pixels.negative_sorted.size
    fprs = (num_neg - np.searchsorted(pixels.negative_sorted, thresholds, side="right")) / num_neg
    # Per region: positives strictly above each threshold (a value counts for t_j, j < below).
    below = np.searchsorted(thresholds, pixels.positive_scores, side="left")
    num_regions, width = pixels.region_sizes.size, thresholds.size + 1
    histogram = np.bincount(pixels.positive_regions * width + below, minlength=num_regions * width)
    above = np.cumsum(histogram.reshape(num_regions, width)[:, ::-1], axis=1)[:, ::-1][:, 1:]
    pros = (above / pixels.region_sizes[:, None].astype(np.float64)).mean(axis=0)
    kept = fprs < max_fpr
    fprs, pros = fprs[kept], pros[kept]
    if fprs.size < 2 or not fprs.max() > fprs.min():
        return warn_undefined("AU-PRO (ader)", "fewer than two distinct FPRs below the limit")
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    direction = -1.0 if np.all(np.diff(fprs) <= 0) else 1.0
    return direction * float(np.dot(np.diff(fprs), pros[1:] + pros[:-1]) / 2.0)


def ader_pixel_f1max(masks: np.ndarray, maps: np.ndarray) -> float:
    """ADer's P-F1max. masks (N, H, W) bool, maps (N, H, W) float."""
    return pixel_f1max_from_split(split_pixels(masks, maps))


def ader_aupro(masks: np.ndarray, maps: np.ndarray, num_thresholds: int = 200, max_fpr: float = 0.3) -> float:
    """ADer's AU-PRO. masks (N, H, W) bool, maps (N, H, W) float."""
    return aupro_from_split(split_pixels(masks, maps), num_thresholds, max_fpr)

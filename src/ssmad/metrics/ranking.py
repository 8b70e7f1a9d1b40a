"""Exact threshold-free binary metrics from ONE sort of the scores.

Every score is packed with its tag into one uint64 key: the high 32 bits are an order-
preserving code of the score (the float32 bit pattern made sortable, or the dense rank of
the score when it is not exactly a float32), the low 32 bits the tag (0 = negative, k >= 1 =
positive belonging to PRO region k; for image labels simply 0/1). One in-place sort of the
keys orders scores and tags together without an index array (8 bytes per pixel instead of
the 8 + 8 + 4 of argsort, gather and values).

The sorted keys are then walked from the highest score down in fixed-size chunks; the
curve points are the ends of groups of equal scores (ties are one point, exactly like
scikit-learn's `roc_curve` / `precision_recall_curve` and MVTec's AU-PRO code), and every
metric is a running reduction over consecutive points:
- AUROC: trapezoids in (FP, TP), / (P * N);
- AP: sum of (recall_k - recall_{k-1}) * precision_k (scikit-learn's definition);
- F1max: max of 2 TP / (TP + FP + P) over the points;
- AU-PRO: trapezoids in (FPR, PRO) up to FPR = max_fpr with linear interpolation there,
  / max_fpr; PRO at a point = sum of the region weights of the positives above it, where a
  pixel of region r weighs 1 / (number of regions * |r|).
"""

from __future__ import annotations

import numpy as np

CHUNK = 1 << 22
_LOW32 = np.uint64(0xFFFFFFFF)


def _score_codes(scores: np.ndarray) -> np.ndarray:
    """(n,) uint32 codes whose order is the order of `scores` (equal scores, equal codes)."""
    scores = np.ascontiguousarray(scores).reshape(-1)
    if scores.dtype != np.float32:
        as_float32 = scores.astype(np.float32)
        if not np.array_equal(as_float32, scores):
            return np.unique(scores, return_inverse=True)[1].reshape(-1).astype(np.uint32)
        scores = as_float32
    bits = scores.view(np.uint32).copy()
    bits[bits == np.uint32(0x80000000)] = 0  # -0.0 ties with +0.0
    negative = bits >= np.uint32(0x80000000)
    np.invert(bits, out=bits, where=negative)
    np.bitwise_or(bits, np.uint32(0x80000000), out=bits, where=~negative)
    return bits


def sorted_keys(scores: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """(n,) uint64 keys (score code << 32 | tag), sorted ascending. scores (n,), tags (n,) uint32."""
    keys = _score_codes(scores).astype(np.uint64)
    np.left_shift(keys, np.uint64(32), out=keys)
    np.bitwise_or(keys, np.ascontiguousarray(tags).reshape(-1), out=keys)
    keys.sort()
    return keys


class _CurveReducer:
    """Running sums over curve points fed in decreasing-threshold order."""

    def __init__(self, num_pos: int, num_neg: int, max_fpr: float) -> None:
        self.num_pos, self.num_neg, self.max_fpr = num_pos, num_neg, max_fpr
        self.tp = self.fp = 0.0
        self.pro = 0.0
        self.roc_area = self.ap_sum = self.pro_area = 0.0
        self.f1max = 0.0

    def add(self, tp: np.ndarray, fp: np.ndarray, pro: np.ndarray | None) -> None:
        """Points (k,) of cumulative true/false positives (and PRO) at successive thresholds."""
        tp_prev = np.concatenate(([self.tp], tp[:-1]))
        fp_prev = np.concatenate(([self.fp], fp[:-1]))
        self.roc_area += float(np.dot(fp - fp_prev, tp + tp_prev))
        self.ap_sum += float(np.dot(tp - tp_prev, tp / (tp + fp)))
        self.f1max = max(self.f1max, float(np.max(2.0 * tp / (tp + fp + self.num_pos))))
        if pro is not None and self.num_neg > 0:
            self._add_pro(fp_prev / self.num_neg, fp / self.num_neg,
                          np.concatenate(([self.pro], pro[:-1])), pro)
            self.pro = float(pro[-1])
        self.tp, self.fp = float(tp[-1]), float(fp[-1])

    def _add_pro(self, x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray) -> None:
        """Trapezoids of segments (x0, y0)-(x1, y1) clipped at x = max_fpr."""
        inside = x0 < self.max_fpr
        if not inside.any():
            return
        x0, x1, y0, y1 = x0[inside], x1[inside], y0[inside], y1[inside]
        beyond = x1 > self.max_fpr
        with np.errstate(invalid="ignore", divide="ignore"):
            y_cut = y0 + (y1 - y0) * (self.max_fpr - x0) / (x1 - x0)
        y_end = np.where(beyond, y_cut, y1)
        x_end = np.minimum(x1, self.max_fpr)
        self.pro_area += float(np.dot(x_end - x0, y0 + y_end)) / 2.0

    def result(self) -> dict[str, float]:
        nan = float("nan")
        both = self.num_pos > 0 and self.num_neg > 0
        return {
            "auroc": self.roc_area / (2.0 * self.num_pos * self.num_neg) if both else nan,
            "ap": self.ap_sum / self.num_pos if self.num_pos > 0 else nan,
            "f1max": self.f1max if self.num_pos > 0 else nan,
            "aupro": self.pro_area / self.max_fpr,
        }


def ranking_metrics(
    scores: np.ndarray,
    tags: np.ndarray,
    region_weights: np.ndarray | None = None,
    max_fpr: float = 0.3,
) -> dict[str, float]:
    """Exact AUROC, AP, F1max (and AU-PRO when `region_weights` is given) from one sort.

    Args:
        scores: (n,) real scores, higher = more anomalous (any float or int dtype, no NaN).
        tags: (n,) uint32, 0 for negatives, >= 1 for positives (the PRO region id).
        region_weights: (R + 1,) float64, weight of a pixel of region k (index 0 unused, 0).
        max_fpr: upper FPR limit of AU-PRO.
    Returns {"auroc", "ap", "f1max", "aupro"}: NaN where undefined (no positives or no
    negatives; "aupro" is NaN without `region_weights`, without regions or without negatives).
    """
    num_pos = int(np.count_nonzero(tags))
    num_neg = int(tags.size - num_pos)
    keys = sorted_keys(scores, tags)
    reducer = _CurveReducer(num_pos, num_neg, max_fpr)
    weights = None if region_weights is None else np.asarray(region_weights, dtype=np.float64)
    tp_total = fp_total = 0
    pro_total = 0.0
    # Walk the ascending keys from the top: chunk [low, high) read backwards.
    for high in range(keys.size, 0, -CHUNK):
        low = max(high - CHUNK, 0)
        chunk = keys[low:high][::-1]
        codes = chunk >> np.uint64(32)
        following = keys[low - 1] >> np.uint64(32) if low > 0 else None
        group_end = np.empty(codes.size, dtype=bool)
        np.not_equal(codes[:-1], codes[1:], out=group_end[:-1])
        group_end[-1] = True if following is None else bool(codes[-1] != following)
        region = (chunk & _LOW32).astype(np.int64)
        positive = region != 0
        tp = np.cumsum(positive, dtype=np.int64) + tp_total
        fp = np.arange(1, codes.size + 1, dtype=np.int64) - (tp - tp_total) + fp_total
        tp_total, fp_total = int(tp[-1]), int(fp[-1])
        pro = None
        if weights is not None:
            pro = np.cumsum(weights[region]) + pro_total
            pro_total = float(pro[-1])
            pro = pro[group_end]
        if group_end.any():
            reducer.add(tp[group_end].astype(np.float64), fp[group_end].astype(np.float64), pro)
    result = reducer.result()
    if weights is None or num_pos == 0 or num_neg == 0:
        result["aupro"] = float("nan")
    return result

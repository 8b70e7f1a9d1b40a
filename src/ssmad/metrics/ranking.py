"""Exact threshold-free binary metrics from one sort of the negatives' scores.

Scores are split into positives (anomalous images or pixels; few) and negatives (many).
The negatives are sorted once; the positives are grouped by distinct value (descending:
v_1 > v_2 > ... > v_m). With TP_j the positives >= v_j and, by two binary searches in the
sorted negatives, F_j / G_j the negatives >= v_j / > v_j, every curve of every threshold is
known exactly: between two positive values only negatives are passed (FP grows, TP and PRO
stay), and at v_j both change together (ties with negatives give one sloped segment). The
ROC and PRO curves are therefore the polylines through

    (0, 0), (G_1, y_0), (F_1, y_1), (G_2, y_1), (F_2, y_2), ..., (F_m, y_m), (N, y_m),

y = TP (ROC) or PRO (AU-PRO), which are exactly the curves through every distinct threshold
that scikit-learn's `roc_curve` and MVTec's AU-PRO code trace (ties are one point). Then
- AUROC: trapezoids of the ROC polyline / (P * N);
- AP: sum_j (TP_j - TP_{j-1}) / P * TP_j / (TP_j + F_j) (precision only changes the sum
  where recall changes; scikit-learn's definition);
- F1max: max_j 2 TP_j / (TP_j + F_j + P) (for a fixed TP, FP is smallest at v_j);
- AU-PRO: trapezoids of the (FPR, PRO) polyline up to FPR = max_fpr, with linear
  interpolation there, / max_fpr; PRO_j = sum of the weights of the positives >= v_j,
  a pixel of region r weighing 1 / (number of regions * |r|).
Cost: one sort of the N negatives (in place), one of the P positives, 2m binary searches.
The same points drawn: :func:`ranking_curves` (the ROC polyline and the PR points).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.dot(np.diff(x), y[1:] + y[:-1]) / 2.0)


def _clipped_trapezoid(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under the polyline (x, y) (x non-decreasing) on [x[0], x_max], linearly
    interpolated at x_max; the whole area when the polyline ends before x_max."""
    inside = int(np.searchsorted(x, x_max, side="right"))
    area = _trapezoid(x[:inside], y[:inside])
    if 0 < inside < x.size and x[inside - 1] < x_max:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        y_cut = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += (x_max - x0) * (y0 + y_cut) / 2.0
    return float(area)


def _polyline(ge: np.ndarray, gt: np.ndarray, y: np.ndarray, num_neg: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (x, y) of the curve through (0,0), (G_j, y_{j-1}), (F_j, y_j), ..., (N, y_m)."""
    x_path = np.empty(2 * ge.size + 2, dtype=np.float64)
    y_path = np.empty_like(x_path)
    x_path[0], y_path[0] = 0.0, 0.0
    x_path[1:-1:2], x_path[2:-1:2] = gt, ge
    y_path[1:-1:2] = np.concatenate(([0.0], y[:-1]))
    y_path[2:-1:2] = y
    x_path[-1], y_path[-1] = num_neg, y[-1]
    return x_path, y_path


def _distinct_positives(
    positive_scores: np.ndarray, negative_scores: np.ndarray, negatives_sorted: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For P > 0 positives with m distinct values v_1 > ... > v_m: ``order`` (P,) sorting the
    positives descending, ``starts`` (m,) where each value's run begins in that order, and TP_j,
    F_j (negatives >= v_j), G_j (negatives > v_j), each (m,) float64."""
    dtype = np.result_type(positive_scores, negative_scores)
    order = np.argsort(positive_scores, kind="stable")[::-1]
    values = positive_scores.astype(dtype, copy=False)[order]
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    distinct = values[starts]  # v_1 > ... > v_m
    tp = np.cumsum(np.diff(np.append(starts, positive_scores.size))).astype(np.float64)
    negatives = negative_scores.astype(dtype, copy=False)
    if not negatives_sorted:
        negatives = np.sort(negatives)
    num_neg = negatives.size
    ge = (num_neg - np.searchsorted(negatives, distinct, side="left")).astype(np.float64)
    gt = (num_neg - np.searchsorted(negatives, distinct, side="right")).astype(np.float64)
    return order, starts, tp, ge, gt


class RankingCurves(NamedTuple):
    """The ROC polyline, ``fpr`` and ``tpr`` (2m + 2,) each, from (0, 0) to (1, 1); and the PR
    points, ``recall`` and ``precision`` (m,) each, at the m distinct positive scores, descending."""

    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray


def ranking_curves(positive_scores: np.ndarray, negative_scores: np.ndarray) -> RankingCurves:
    """The curves :func:`ranking_metrics` measures, to draw: the ROC polyline through every
    distinct threshold (ties of positives with negatives one sloped segment, as scikit-learn's
    ``roc_curve`` traces them) and the (recall, precision) points AP sums over.

    positive_scores (P,) and negative_scores (N,) as in :func:`ranking_metrics`. Without
    positives every array is empty (there is no curve); without negatives fpr is 0 throughout.
    """
    if positive_scores.size == 0:
        return RankingCurves(*(np.empty(0) for _ in range(4)))
    _, _, tp, ge, gt = _distinct_positives(positive_scores, negative_scores, negatives_sorted=False)
    num_pos, num_neg = positive_scores.size, max(negative_scores.size, 1)
    fpr, tpr = _polyline(ge / num_neg, gt / num_neg, tp / num_pos, negative_scores.size / num_neg)
    return RankingCurves(fpr, tpr, tp / num_pos, tp / (tp + ge))


def ranking_metrics(
    positive_scores: np.ndarray,
    negative_scores: np.ndarray,
    positive_weights: np.ndarray | None = None,
    max_fpr: float = 0.3,
    negatives_sorted: bool = False,
) -> dict[str, float]:
    """Exact AUROC, AP, F1max (and AU-PRO when `positive_weights` is given).

    Args:
        positive_scores: (P,) scores of the positives (higher = more anomalous), no NaN.
        negative_scores: (N,) scores of the negatives; sorted here (a copy) unless
            `negatives_sorted` says they already are ascending.
        positive_weights: (P,) PRO weight of every positive pixel (see the module docstring).
        max_fpr: upper FPR limit of AU-PRO.
    Returns {"auroc", "ap", "f1max", "aupro"}; NaN where undefined (no positives, or no
    negatives for AUROC and AU-PRO; AU-PRO also without weights).
    """
    nan = float("nan")
    num_pos, num_neg = positive_scores.size, negative_scores.size
    if num_pos == 0:
        return {"auroc": nan, "ap": nan, "f1max": nan, "aupro": nan}
    order, starts, tp, ge, gt = _distinct_positives(positive_scores, negative_scores, negatives_sorted)
    recall_step = np.diff(np.concatenate(([0.0], tp)))
    result = {
        "ap": float(np.dot(recall_step, tp / (tp + ge)) / num_pos),
        "f1max": float(np.max(2.0 * tp / (tp + ge + num_pos))),
        "auroc": nan,
        "aupro": nan,
    }
    if num_neg == 0:
        return result
    result["auroc"] = _trapezoid(*_polyline(ge, gt, tp, num_neg)) / (num_pos * num_neg)
    if positive_weights is not None:
        pro = np.add.reduceat(positive_weights.astype(np.float64)[order], starts).cumsum()
        fpr, pro_path = _polyline(ge / num_neg, gt / num_neg, pro, 1)
        result["aupro"] = _clipped_trapezoid(fpr, pro_path, max_fpr) / max_fpr
    return result

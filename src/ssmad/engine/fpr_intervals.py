"""How far a false-positive rate can be from its target: what n calibration normals support, and
what a count of false alarms on held-out normals shows.

A threshold set at the r-th largest of n calibration scores leaves a realised false-positive rate
(the chance that a new normal image scores above it) that is itself random, over the draw of the
calibration set: for continuous scores of exchangeable normals it follows Beta(r, n + 1 - r)
(the r-th largest of n uniforms), with mean r / (n + 1). So with n normals no empirical threshold
promises a rate below about 1 / (n + 1) (r = 1: the largest normal score), and a 1 % target needs
about 100 normals before the interval even contains rates near it.

The image threshold (``ssmad.engine.thresholds``) is, by the ``conformal`` rule, one order
statistic (the interval of its rank); by the earlier ``quantile`` rule (linear interpolation) it
lies between two neighbouring order statistics, and :func:`calibration_fpr_interval` takes the
outer bounds of their two intervals.

:func:`clopper_pearson_interval` is the exact binomial interval of a rate measured as k false
alarms among m held-out normals (the benchmark's measurement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import beta

DEFAULT_CONFIDENCE = 0.95


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return 1.0 - confidence


def clopper_pearson_interval(count: int, trials: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a rate observed as ``count`` of ``trials``."""
    alpha = _check_confidence(confidence)
    if trials < 1 or not 0 <= count <= trials:
        raise ValueError(f"need 0 <= count <= trials and trials >= 1, got {count} of {trials}")
    low = 0.0 if count == 0 else float(beta.ppf(alpha / 2, count, trials - count + 1))
    high = 1.0 if count == trials else float(beta.ppf(1 - alpha / 2, count + 1, trials - count))
    return low, high


def order_statistic_fpr_interval(
    rank_from_top: int, num_normals: int, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """Central interval of the realised false-positive rate of a threshold at the
    ``rank_from_top``-th largest (1 = the largest) of ``num_normals`` calibration scores:
    quantiles of Beta(r, n + 1 - r)."""
    alpha = _check_confidence(confidence)
    if not 1 <= rank_from_top <= num_normals:
        raise ValueError(f"rank must be in 1..{num_normals}, got {rank_from_top}")
    shape = (rank_from_top, num_normals + 1 - rank_from_top)
    return float(beta.ppf(alpha / 2, *shape)), float(beta.ppf(1 - alpha / 2, *shape))


@dataclass(frozen=True)
class FprInterval:
    """What ``num_normals`` calibration normals support for a ``target_fpr`` threshold.

    low / high: the interval of the realised rate (at ``confidence``); expected: its mean
    (interpolated between the two order statistics the quantile lies between); smallest: the
    smallest expected rate any threshold from these normals can have, 1 / (n + 1).
    """

    target_fpr: float
    num_normals: int
    confidence: float
    low: float
    high: float
    expected: float
    smallest: float

    def contains(self, rate: float) -> bool:
        return self.low <= rate <= self.high


THRESHOLD_RULES = ("conformal", "quantile")  # how an image threshold follows from normal scores


def check_threshold_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`THRESHOLD_RULES`, else a ValueError naming them."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}: one of {', '.join(THRESHOLD_RULES)}")
    return rule


def conformal_index(num_normals: int, target_fpr: float) -> int:
    """k = min(ceil((n + 1) (1 - target_fpr)), n): the ``conformal`` threshold is the k-th smallest
    (1-based) of n normal scores (the rounding keeps float error from adding one)."""
    return min(math.ceil(round((num_normals + 1) * (1.0 - target_fpr), 9)), num_normals)


def smallest_supported_fpr(num_normals: int) -> float:
    """1 / (n + 1): the expected false-positive rate of the largest of n normal scores."""
    return 1.0 / (num_normals + 1)


def calibration_fpr_interval(
    num_normals: int, target_fpr: float, rule: str, confidence: float = DEFAULT_CONFIDENCE
) -> FprInterval:
    """The interval of the realised false-positive rate of an image threshold set from
    ``num_normals`` scores by ``rule`` (``ssmad.engine.thresholds.image_threshold``): ``conformal``,
    the k-th smallest, k = min(ceil((n + 1) (1 - target_fpr)), n); ``quantile``, the
    ``1 - target_fpr`` quantile with linear interpolation."""
    if num_normals < 1:
        raise ValueError(f"need at least one calibration normal, got {num_normals}")
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target false-positive rate must be in (0, 1), got {target_fpr}")
    if check_threshold_rule(rule) == "conformal":
        rank = num_normals + 1 - conformal_index(num_normals, target_fpr)  # from the top
        low, high = order_statistic_fpr_interval(rank, num_normals, confidence)
        return FprInterval(target_fpr, num_normals, confidence, low, high, rank / (num_normals + 1),
                           smallest_supported_fpr(num_normals))
    position = (num_normals - 1) * (1.0 - target_fpr)  # 0-based, ascending, as numpy's "linear"
    below, above = math.floor(position), math.ceil(position)
    rank_of_below, rank_of_above = num_normals - below, num_normals - above  # ranks from the top
    low = order_statistic_fpr_interval(rank_of_above, num_normals, confidence)[0]
    high = order_statistic_fpr_interval(rank_of_below, num_normals, confidence)[1]
    fraction = position - below
    expected = ((1 - fraction) * rank_of_below + fraction * rank_of_above) / (num_normals + 1)
    return FprInterval(target_fpr, num_normals, confidence, low, high, expected, smallest_supported_fpr(num_normals))

"""False-positive-rate intervals against cases worked out by hand (closed forms of the Beta
distributions involved) and against a simulation of the calibration rule."""

import numpy as np
import pytest

from ssmad.engine.fpr_intervals import (
    calibration_fpr_interval,
    clopper_pearson_interval,
    conformal_index,
    order_statistic_fpr_interval,
    smallest_supported_fpr,
)
from ssmad.engine.thresholds import calibrate_class


def test_clopper_pearson_hand_computed():
    # k = 0 of 10: upper bound solves (1 - p)^10 = 0.025; k = 10 of 10 mirrors it.
    assert clopper_pearson_interval(0, 10) == pytest.approx((0.0, 1 - 0.025 ** 0.1), abs=1e-12)
    assert clopper_pearson_interval(10, 10) == pytest.approx((0.025 ** 0.1, 1.0), abs=1e-12)
    # k = 1 of 2: 1 - (1 - p)^2 = 0.025 and p^2 = 0.975.
    assert clopper_pearson_interval(1, 2) == pytest.approx((1 - 0.975 ** 0.5, 0.975 ** 0.5), abs=1e-12)
    # 90 %: k = 0 of 4: (1 - p)^4 = 0.05.
    assert clopper_pearson_interval(0, 4, 0.9)[1] == pytest.approx(1 - 0.05 ** 0.25, abs=1e-12)
    with pytest.raises(ValueError, match="count <= trials"):
        clopper_pearson_interval(3, 2)


def test_order_statistic_interval_of_the_largest_score():
    # The largest of 20: FPR ~ Beta(1, 20), CDF 1 - (1 - p)^20.
    low, high = order_statistic_fpr_interval(1, 20)
    assert (low, high) == pytest.approx((1 - 0.975 ** (1 / 20), 1 - 0.025 ** (1 / 20)), abs=1e-12)
    assert smallest_supported_fpr(20) == pytest.approx(1 / 21)


def test_quantile_rule_interval_of_a_one_percent_target_with_twenty_normals():
    # position 19 * 0.99 = 18.81: between the 2nd largest (index 18) and the largest (index 19).
    interval = calibration_fpr_interval(20, 0.01, "quantile")
    assert interval.low == pytest.approx(1 - 0.975 ** (1 / 20), abs=1e-12)  # from the largest
    # from the 2nd largest: Beta(2, 19), CDF 1 - (1 - p)^20 - 20 p (1 - p)^19 = 0.975 at the bound
    p = interval.high
    assert 1 - (1 - p) ** 20 - 20 * p * (1 - p) ** 19 == pytest.approx(0.975, abs=1e-10)
    assert interval.expected == pytest.approx((0.19 * 2 + 0.81 * 1) / 21)
    assert interval.smallest == pytest.approx(1 / 21) and interval.expected > interval.target_fpr
    assert interval.contains(0.05) and not interval.contains(0.0)


@pytest.mark.parametrize(("n", "target", "rank"), [(20, 0.01, 1), (20, 0.05, 1), (20, 0.1, 2), (99, 0.01, 1), (199, 0.01, 2)])
def test_conformal_rule_interval_is_one_order_statistics(n, target, rank):
    # k = min(ceil((n + 1) (1 - target)), n), by hand: the rank from the top is n + 1 - k
    interval = calibration_fpr_interval(n, target, "conformal")
    assert (interval.low, interval.high) == pytest.approx(order_statistic_fpr_interval(rank, n), abs=1e-12)
    assert interval.expected == pytest.approx(rank / (n + 1))
    assert conformal_index(n, target) == n + 1 - rank


def test_conformal_rule_expects_at_most_its_target_when_the_normals_allow_it():
    for n in range(1, 300):
        for target in (0.005, 0.01, 0.02, 0.05, 0.1):
            interval = calibration_fpr_interval(n, target, "conformal")
            if n + 1 >= 1 / target:
                assert interval.expected <= target + 1e-12
            else:  # too few normals: the largest score, the smallest rate any threshold from them has
                assert interval.expected == pytest.approx(interval.smallest)


@pytest.mark.parametrize(("rule", "coverage"), [("quantile", (0.95, 0.995)), ("conformal", (0.935, 0.965))])
def test_calibration_interval_covers_simulated_rates(rule, coverage):
    """The rule's realised rate (exact for uniform scores: 1 - threshold) falls inside the interval
    about as often as its confidence says: at least it for the quantile rule (the outer bounds of
    two order statistics), about it for the conformal rule (one order statistic)."""
    rng = np.random.default_rng(0)
    n, target = 30, 0.05
    interval = calibration_fpr_interval(n, target, rule)
    rates = [1 - calibrate_class(rng.random(n), np.zeros((n, 1, 1)), target, threshold_rule=rule).threshold
             for _ in range(4000)]
    inside = np.mean([interval.contains(rate) for rate in rates])
    assert coverage[0] <= inside <= coverage[1]
    assert np.mean(rates) == pytest.approx(interval.expected, abs=0.003)

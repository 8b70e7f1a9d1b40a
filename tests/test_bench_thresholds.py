"""The pure parts of benchmarks/bench_thresholds.py: the splits, the counting of false alarms and the
summary (the script's training runs are not run here)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ssmad.engine.fpr_intervals import calibration_fpr_interval

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_thresholds.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_thresholds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_splits_are_seeded_disjoint_and_complete(bench):
    train, pool = bench.split_normals(20, 12, seed=3)
    assert len(train) == 12 and len(pool) == 8
    assert sorted(np.concatenate([train, pool]).tolist()) == list(range(20))
    np.testing.assert_array_equal(bench.split_normals(20, 12, seed=3)[0], train)
    assert not np.array_equal(bench.split_normals(20, 12, seed=4)[0], train)
    with pytest.raises(ValueError, match="--train"):
        bench.split_normals(20, 20, seed=0)


def test_false_alarms_are_counted_at_or_above_each_rules_threshold(bench):
    scores = np.arange(10, dtype=np.float64)  # every draw: 4 calibrate, 6 are counted
    quantile = bench.realised_rates(scores, 4, (0.1, 0.5), resamples=30, seed=0, rule="quantile")
    conformal = bench.realised_rates(scores, 4, (0.1, 0.5), resamples=30, seed=0, rule="conformal")
    rng = np.random.default_rng(0)
    for index in range(30):
        order = rng.permutation(10)
        calibration, held_out = np.sort(scores[order[:4]]), scores[order[4:]]
        assert quantile[0.1][index] == (int((held_out >= np.quantile(calibration, 0.9)).sum()), 6)
        assert quantile[0.5][index] == (int((held_out >= np.quantile(calibration, 0.5)).sum()), 6)
        # conformal, by hand: k = min(ceil(5 * 0.9), 4) = 4 (the largest); k = ceil(5 * 0.5) = 3
        assert conformal[0.1][index] == (int((held_out >= calibration[3]).sum()), 6)
        assert conformal[0.5][index] == (int((held_out >= calibration[2]).sum()), 6)


def test_summary_of_hand_made_counts(bench):
    counts = {0.05: [(0, 10), (1, 10), (3, 10)]}
    (row,) = bench.summarise(counts, num_calibration=20, rule="conformal")
    assert row["realised_mean"] == pytest.approx(0.4 / 3) and row["pooled"] == pytest.approx(4 / 30)
    assert row["realised_std"] == pytest.approx(np.std([0.0, 0.1, 0.3]))
    supported = calibration_fpr_interval(20, 0.05, "conformal")
    inside = np.mean([supported.contains(r) for r in (0.0, 0.1, 0.3)])
    assert row["inside_supported"] == pytest.approx(inside)
    assert row["supported_low"] == supported.low and row["smallest_supported"] == pytest.approx(1 / 21)
    assert "| conformal | 5.0 % | 20 |" in bench.markdown("bottle", [row])

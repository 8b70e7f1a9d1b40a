"""Calibration: thresholds, normalised scores and heatmap scales against hand-computed values."""

import math

import numpy as np
import pytest

from ssmad.engine.pixel_thresholds import PixelRule
from ssmad.engine.thresholds import (
    Calibration,
    ClassCalibration,
    calibrate,
    calibrate_class,
    with_image_pixel_thresholds,
)


def test_threshold_scale_and_normalised_score_by_hand():
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    maps = np.arange(5 * 2 * 2, dtype=np.float32).reshape(5, 2, 2) / 100  # median 0.095
    cal = calibrate_class(scores, maps, target_fpr=0.3)
    assert cal.threshold == pytest.approx(5.0)  # conformal: k = ceil(6 * 0.7) = 5th smallest of 1..5
    assert cal.threshold_rule == "conformal"
    assert cal.scale == pytest.approx(math.sqrt(2.0))  # population std of 1..5
    assert cal.map_low == pytest.approx(0.095)
    assert cal.map_high == pytest.approx(5.0)
    normalized = cal.normalize(np.array([5.0, 5.0 + math.sqrt(2.0), 5.0 - math.sqrt(2.0)]))
    assert normalized == pytest.approx([0.5, 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))])
    assert calibrate_class(scores, maps, target_fpr=0.5).threshold == pytest.approx(3.0)  # k = ceil(3) = 3
    assert calibrate_class(scores, maps, target_fpr=0.01).threshold == pytest.approx(5.0)  # k = 6, at most n
    quantile = calibrate_class(scores, maps, target_fpr=0.3, threshold_rule="quantile")
    assert quantile.threshold == pytest.approx(3.8) and quantile.threshold_rule == "quantile"  # 0.7 quantile, linear
    with pytest.raises(ValueError, match="unknown threshold rule 'median'"):
        calibrate_class(scores, maps, target_fpr=0.3, threshold_rule="median")


def test_a_record_without_its_threshold_rule_is_of_the_quantile_rule():
    record = {"threshold": 4.0, "scale": 1.0, "map_low": 0.0, "map_high": 4.0, "num_images": 5}
    assert ClassCalibration.from_dict(record).threshold_rule == "quantile"
    calibration = {"target_fpr": 0.25, "classes": {"a": record}, "global": record}
    migrated = with_image_pixel_thresholds(calibration)
    assert migrated["classes"]["a"]["threshold_rule"] == "quantile" and migrated["global"]["threshold_rule"] == "quantile"


def test_heatmap_uses_the_fixed_class_scale_not_per_image_min_max():
    cal = calibrate_class(np.array([1.0, 2.0, 3.0]), np.zeros((3, 2, 2)), target_fpr=0.5)  # threshold 2
    flat = np.full((2, 2), 0.5)
    assert cal.heatmap(flat) == pytest.approx(np.full((2, 2), 0.25))  # min-max would give 0 or nan
    assert cal.heatmap(np.array([-1.0, 4.0])) == pytest.approx([0.0, 1.0])


def test_per_class_and_global_calibration_and_round_trip():
    names = ["a", "a", "a", "b", "b", "b"]
    scores = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    maps = np.zeros((6, 4, 4), dtype=np.float32)
    calibration = calibrate(names, scores, maps, target_fpr=0.5)
    assert calibration.classes["a"].threshold == pytest.approx(2.0)
    assert calibration.classes["b"].threshold == pytest.approx(20.0)
    assert calibration.overall.threshold == pytest.approx(10.0)  # k = ceil(7 * 0.5) = 4th smallest of all six
    assert calibration.for_class(None) is calibration.overall
    assert Calibration.from_dict(calibration.to_dict()) == calibration


@pytest.mark.parametrize("fpr", [0.0, 1.0, -0.1])
def test_bad_target_fpr_is_an_error(fpr):
    with pytest.raises(ValueError, match="false-positive rate"):
        calibrate(["a"], np.array([1.0]), np.zeros((1, 2, 2)), target_fpr=fpr)


def test_calibration_computes_each_class_pixel_threshold_by_the_rule_from_its_normals_maps():
    rng = np.random.default_rng(0)
    names = ["a"] * 4 + ["b"] * 3
    scores = rng.random(7)
    maps = [rng.random((5, 6)) * (1 + i) for i in range(7)]
    default = calibrate(names, scores, maps, 0.1)
    assert all(cal.pixel.rule == "image" and cal.pixel.value == cal.threshold for cal in default.classes.values())
    by_mean_std = calibrate(names, scores, maps, 0.1, PixelRule("mean_std", num_std=2.0))
    pixels_a = np.concatenate([m.ravel() for m in maps[:4]])
    assert by_mean_std.classes["a"].pixel.value == pytest.approx(pixels_a.mean() + 2.0 * pixels_a.std())
    assert by_mean_std.classes["a"].pixel.num_images == 4 and by_mean_std.classes["a"].pixel.num_pixels == 120
    by_fpr = calibrate(names, scores, maps, 0.1, PixelRule("pixel_fpr", pixel_fpr=0.05))
    all_pixels = np.concatenate([m.ravel() for m in maps])
    assert np.mean(all_pixels >= by_fpr.overall.pixel.value) == pytest.approx(0.05, abs=1 / all_pixels.size)
    assert by_fpr.pixel_rule == PixelRule("pixel_fpr", pixel_fpr=0.05)
    assert Calibration.from_dict(by_fpr.to_dict()) == by_fpr
    with pytest.raises(ValueError, match="unknown pixel threshold rule 'median'"):
        PixelRule("median")


def test_too_few_normals_is_where_the_conformal_threshold_cannot_expect_its_target():
    from ssmad.engine.calibrate_on_normals import too_few_normals, too_few_normals_warning

    names = ["short"] * 98 + ["enough"] * 99  # 1 % needs n + 1 >= 100
    scores = np.random.default_rng(0).random(len(names))
    calibration = calibrate(names, scores, np.zeros((len(names), 2, 2)), target_fpr=0.01)
    assert too_few_normals(calibration) == ["short 98"]
    assert calibration.classes["enough"].threshold == pytest.approx(scores[98:].max())  # k = 99 = n
    assert "too few calibration normals (short 98) to show a 0.01 false-positive rate" in too_few_normals_warning(calibration)

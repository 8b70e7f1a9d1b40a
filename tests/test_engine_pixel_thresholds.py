"""Pixel threshold rules against numpy on the concatenated pixels, and the record's round trip."""

import numpy as np
import pytest

from ssmad.engine.pixel_thresholds import (
    DEFAULT_PIXEL_RULE,
    PIXEL_RULES,
    PixelThreshold,
    calibrate_pixel_threshold,
    mean_std_threshold,
    pixel_fpr_threshold,
)
from ssmad.metrics.defect_regions import defect_regions


def maps_of_own_sizes(rng):
    return [rng.normal(loc, 0.5, shape).astype(np.float32)
            for loc, shape in ((1.0, (20, 30)), (3.0, (7, 9)), (1.5, (16, 16)))]


def test_mean_std_equals_numpy_on_all_pixels():
    maps = maps_of_own_sizes(np.random.default_rng(0))
    pixels = np.concatenate([m.reshape(-1) for m in maps]).astype(np.float64)
    assert mean_std_threshold(maps) == pytest.approx(pixels.mean() + 3 * pixels.std(), rel=1e-12)
    stacked = np.stack([maps[0], maps[0] + 1])
    flat = stacked.reshape(-1).astype(np.float64)
    assert mean_std_threshold(stacked, 2.0) == pytest.approx(flat.mean() + 2 * flat.std(), rel=1e-12)


def test_pixel_fpr_marks_that_fraction_of_normal_pixels():
    maps = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    value = pixel_fpr_threshold(maps, 0.01)
    assert value == pytest.approx(989.01, rel=1e-6)  # (1000 - 1) * 0.99 = 989.01
    assert (maps >= value).sum() == 10
    listed = maps_of_own_sizes(np.random.default_rng(1))
    pixels = np.concatenate([m.reshape(-1) for m in listed])
    assert pixel_fpr_threshold(listed, 0.05) == pytest.approx(np.quantile(pixels, 0.95))


def test_image_rule_is_the_image_threshold_and_every_anomalous_image_has_a_region():
    assert DEFAULT_PIXEL_RULE == "image" and set(PIXEL_RULES) == {"image", "mean_std", "pixel_fpr"}
    record = calibrate_pixel_threshold("image", 0.7)
    assert record == PixelThreshold("image", 0.7)
    rng = np.random.default_rng(2)
    for values in rng.random((20, 8, 8)):
        _, regions = defect_regions(values, record.value)
        assert bool(regions) == (values.max() >= record.value)


def test_calibrate_records_rule_parameters_and_counts():
    maps = maps_of_own_sizes(np.random.default_rng(3))
    record = calibrate_pixel_threshold("mean_std", 0.7, maps, num_std=3.0)
    assert record.rule == "mean_std" and record.num_std == 3.0 and record.pixel_fpr is None
    assert record.num_images == 3 and record.num_pixels == 600 + 63 + 256
    assert record.value == pytest.approx(mean_std_threshold(maps))
    record = calibrate_pixel_threshold("pixel_fpr", 0.7, maps, pixel_fpr=0.02)
    assert record.value == pytest.approx(pixel_fpr_threshold(maps, 0.02)) and record.pixel_fpr == 0.02
    with pytest.raises(ValueError, match="needs the calibration normals' maps"):
        calibrate_pixel_threshold("mean_std", 0.7)
    with pytest.raises(ValueError, match="unknown pixel threshold rule 'otsu'"):
        calibrate_pixel_threshold("otsu", 0.7, maps)
    with pytest.raises(ValueError, match="NaN"):
        calibrate_pixel_threshold("mean_std", 0.7, [np.full((2, 2), np.nan)])


def test_record_round_trip_ignores_unknown_keys_and_names_missing_ones():
    record = PixelThreshold("pixel_fpr", 1.25, pixel_fpr=0.001, num_images=4, num_pixels=4096)
    assert PixelThreshold.from_dict(record.to_dict()) == record
    assert PixelThreshold.from_dict({**record.to_dict(), "added_later": [1, 2]}) == record
    assert PixelThreshold.from_dict({"rule": "image", "value": 0.5}) == PixelThreshold("image", 0.5)
    with pytest.raises(ValueError, match="'value'"):
        PixelThreshold.from_dict({"rule": "image"})
    with pytest.raises(ValueError, match="unknown rule 'otsu'"):
        PixelThreshold.from_dict({"rule": "otsu", "value": 0.5})

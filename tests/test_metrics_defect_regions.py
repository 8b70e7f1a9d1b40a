"""Defect regions of a hand-made map: boxes, areas, scores and centroids worked out by hand."""

import numpy as np
import pytest

from ssmad.metrics.defect_regions import DEFAULT_MIN_AREA, DefectRegion, defect_regions


def hand_made_map():
    """A 10 x 12 map (H x W): a 3 x 4 defect (rows 1-3, columns 2-5) peaking at 0.9, a 2 x 2 defect
    (rows 6-7, columns 8-9) peaking at 0.95, and one lone pixel of 0.8 at row 9, column 0."""
    values = np.full((10, 12), 0.1, dtype=np.float32)
    values[1:4, 2:6] = 0.6
    values[2, 3] = 0.9
    values[6:8, 8:10] = 0.7
    values[7, 9] = 0.95
    values[9, 0] = 0.8
    return values


def test_two_defects_give_two_regions_and_a_small_one_is_dropped():
    values = hand_made_map()
    mask, regions = defect_regions(values, threshold=0.5, min_area=2)
    assert len(regions) == 2  # the lone pixel (area 1) is dropped
    second, first = regions  # highest peak first: the 2 x 2 defect
    assert second == DefectRegion(
        box=(8, 6, 10, 8), area_px=4, area_fraction=4 / 120, peak_score=pytest.approx(0.95),
        mean_score=pytest.approx((3 * 0.7 + 0.95) / 4), centroid=(8.5, 6.5),
    )
    assert first.box == (2, 1, 6, 4) and first.area_px == 12
    assert first.area_fraction == pytest.approx(0.1)
    assert first.peak_score == pytest.approx(0.9)
    assert first.mean_score == pytest.approx((11 * 0.6 + 0.9) / 12)
    assert first.centroid == pytest.approx((3.5, 2.0))
    expected_mask = np.zeros((10, 12), dtype=bool)
    expected_mask[1:4, 2:6] = expected_mask[6:8, 8:10] = True
    np.testing.assert_array_equal(mask, expected_mask)  # the dropped pixel is out of the mask too


def test_default_keeps_every_region_and_threshold_is_inclusive():
    values = hand_made_map()
    assert DEFAULT_MIN_AREA == 1
    mask, regions = defect_regions(values, threshold=0.8)
    # >= 0.8: the two peaks and the lone pixel
    assert [r.box for r in regions] == [(9, 7, 10, 8), (3, 2, 4, 3), (0, 9, 1, 10)]
    assert mask.sum() == 3
    assert regions[0].to_dict() == {
        "box": [9, 7, 10, 8], "area_px": 1, "area_fraction": pytest.approx(1 / 120),
        "peak_score": pytest.approx(0.95), "mean_score": pytest.approx(0.95), "centroid": [9.0, 7.0],
    }


def test_diagonal_neighbours_are_one_region_and_no_region_above_the_maximum():
    values = np.zeros((4, 4))
    values[0, 0] = values[1, 1] = values[2, 2] = 1.0
    mask, regions = defect_regions(values[None], 0.5)
    assert len(regions) == 1 and regions[0].box == (0, 0, 3, 3) and regions[0].area_px == 3
    mask, regions = defect_regions(values, 1.5)
    assert regions == [] and not mask.any()


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_area"):
        defect_regions(np.zeros((4, 4)), 0.5, min_area=0)
    with pytest.raises(ValueError, match="one \\(H, W\\) map"):
        defect_regions(np.zeros((2, 4, 4)), 0.5)

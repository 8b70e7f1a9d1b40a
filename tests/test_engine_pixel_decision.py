"""Pixel decisions at the original resolution: the mask resized from the model's resolution against a
slow per-pixel reference, hand-made regions, and the default rule's promise on the tiny run
(every image decided anomalous has a region, no image decided normal has one), ties included."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import ssmad
from ssmad.engine.pixel_decision import pixel_decision, resize_mask
from ssmad.engine.thresholds import Calibration


def slow_resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Per pixel: an output pixel is marked when the input pixel under its centre is, or when it is
    under the centre of a marked input pixel and the mask shrinks."""
    height, width = mask.shape
    out_height, out_width = size_hw
    out = np.zeros(size_hw, dtype=bool)
    for y in range(out_height):
        for x in range(out_width):
            source_y, source_x = int((y + 0.5) * height / out_height), int((x + 0.5) * width / out_width)
            out[y, x] = mask[min(source_y, height - 1), min(source_x, width - 1)]
    for y, x in zip(*np.nonzero(mask)):
        out[min(int((y + 0.5) * out_height / height), out_height - 1), min(int((x + 0.5) * out_width / width), out_width - 1)] = True
    return out


@pytest.mark.parametrize("size_hw", [(16, 16), (37, 50), (5, 7), (3, 30), (16, 16 * 3)])
def test_resize_mask_matches_the_slow_reference_and_keeps_every_marked_pixel(size_hw):
    rng = np.random.default_rng(0)
    for density in (0.0, 0.01, 0.2):
        mask = rng.random((16, 16)) < density
        mask[rng.integers(16), rng.integers(16)] = density > 0  # at least one pixel unless empty
        resized = resize_mask(mask, size_hw)
        np.testing.assert_array_equal(resized, slow_resize_mask(mask, size_hw))
        assert resized.any() == mask.any()


def test_doubling_a_two_defect_map_doubles_boxes_and_quadruples_areas_and_drops_the_small_one():
    model_map = np.full((10, 12), 0.1, dtype=np.float32)
    model_map[1:4, 2:6] = 0.6  # a 3 x 4 defect
    model_map[6:8, 8:10] = 0.7  # a 2 x 2 defect
    model_map[9, 0] = 0.8  # one pixel: 4 pixels at twice the size, below min_area 5
    image_map = np.kron(model_map, np.ones((2, 2), np.float32))  # (20, 24), the map at the original size
    mask, regions = pixel_decision(model_map, image_map, 0.5, min_area=5)
    assert [(r.box, r.area_px) for r in regions] == [((16, 12, 20, 16), 16), ((4, 2, 12, 8), 48)]
    assert regions[1].area_fraction == pytest.approx(48 / (20 * 24))
    assert regions[0].peak_score == pytest.approx(0.7) and regions[0].centroid == pytest.approx((17.5, 13.5))
    expected = np.zeros((20, 24), dtype=bool)
    expected[12:16, 16:20] = expected[2:8, 4:12] = True
    np.testing.assert_array_equal(mask, expected)


def _images(tiny_run) -> list[Image.Image]:
    """The tiny run's test images of both classes, at three sizes (up, down and unchanged)."""
    paths = sorted((tiny_run.data / "wood" / "test").rglob("*.png")) + sorted((tiny_run.data / "nut" / "test").rglob("*.png"))
    images = [Image.open(p).convert("RGB") for p in paths]
    sizes = [(50, 37), (150, 90), None]
    return [image.resize(sizes[i % 3]) if sizes[i % 3] else image for i, image in enumerate(images)]


def _assert_promise(result) -> None:
    for decision, mask, regions, image_map in zip(result.decisions, result.masks, result.regions, result.maps):
        assert mask.shape == image_map.shape
        assert bool(decision) == mask.any() == (len(regions) > 0)


def test_default_rule_every_anomalous_image_has_a_region_and_no_normal_one_has(tiny_run):
    detector = ssmad.load(tiny_run.run, "cpu")
    images = _images(tiny_run)
    for class_name in ("wood", "nut", None):
        result = detector.predict(images, class_name=class_name)
        assert result.pixel_thresholds.tolist() == result.thresholds.tolist()
        _assert_promise(result)
    # Thresholds between the scores, and exactly at a score (a tie: anomalous, and a region).
    scores = np.sort(detector.predict(images, class_name="wood").scores)
    for threshold in (scores[0], scores[len(scores) // 2], (scores[2] + scores[3]) / 2, scores[-1]):
        wood = replace(detector.calibration.classes["wood"], threshold=float(threshold), pixel=None)
        detector.calibration = Calibration(detector.calibration.target_fpr, {**detector.calibration.classes, "wood": wood},
                                           detector.calibration.overall)
        result = detector.predict(images, class_name="wood")
        assert 0 < result.decisions.sum() <= len(images)
        _assert_promise(result)


def test_pixel_threshold_and_min_area_override_the_calibration(tiny_run):
    detector = ssmad.load(tiny_run.run, "cpu", pixel_threshold=-1e9, min_area=2)
    result = detector.predict(_images(tiny_run)[:2], class_name="wood")
    assert result.pixel_thresholds.tolist() == [-1e9, -1e9]
    assert all(mask.all() and len(regions) == 1 and regions[0].area_fraction == 1.0
               for mask, regions in zip(result.masks, result.regions))
    with pytest.raises(ValueError, match="--min-area"):
        detector.set_pixel_decision(None, 0)

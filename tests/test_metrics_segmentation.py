"""SegF1 against scikit-learn's F1 on the binarised pixels; AU-PRO to 0.05 and 0.3 against a
brute-force integration of the PRO curve, threshold by threshold; both for (N, H, W) arrays and
for lists of maps of their own sizes."""

import numpy as np
import pytest
from pro_reference import brute_force_area
from scipy import ndimage
from sklearn.metrics import f1_score

from ssmad.metrics import UndefinedMetricWarning, evaluate
from ssmad.metrics.segmentation import aupro, seg_f1, segmentation_metrics


def blobs(rng, count, shape):
    """Masks (count, H, W) with 1-3 rectangles in all images but the first; maps higher inside."""
    masks = np.zeros((count, *shape), dtype=bool)
    for index in range(1, count):
        for _ in range(rng.integers(1, 4)):
            top, left = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
            masks[index, top:top + rng.integers(1, shape[0] // 3), left:left + rng.integers(1, shape[1] // 3)] = True
    maps = (rng.random((count, *shape)) + 0.7 * masks).astype(np.float32)
    return masks, maps


def own_sizes(rng):
    """Five images of different sizes: lists of masks and maps."""
    pairs = [blobs(rng, 2, shape) for shape in ((20, 30), (31, 17), (24, 24))]
    masks = [m for pair in pairs for m in pair[0]][1:]
    maps = [m for pair in pairs for m in pair[1]][1:]
    return masks, maps


def brute_force_pro_curve(masks, maps):
    """(FPR, PRO) at every distinct map value, from the highest down, starting at (0, 0)."""
    regions = []
    for mask in masks:
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions.extend((mask, labelled == k) for k in range(1, count + 1))
    all_values = np.concatenate([m.reshape(-1) for m in maps])
    num_normal = sum(int((~mask).sum()) for mask in masks)
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(all_values)[::-1]:
        above = [values >= threshold for values in maps]
        fprs.append(sum(int((a & ~mask).sum()) for a, mask in zip(above, masks)) / num_normal)
        covered = []
        for image, mask in enumerate(masks):
            covered.extend((above[image] & region).sum() / region.sum() for m, region in regions if m is mask)
        pros.append(np.mean(covered))
    return np.array(fprs), np.array(pros)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("max_fpr", [0.05, 0.3])
def test_aupro_equals_brute_force_integration(ties, max_fpr):
    rng = np.random.default_rng(11 + ties)
    masks, maps = blobs(rng, 5, (24, 20))
    if ties:
        maps = np.round(maps * 8) / 8
    expected = brute_force_area(*brute_force_pro_curve(list(masks), list(maps)), max_fpr)
    assert aupro(masks, maps, max_fpr) == pytest.approx(expected, abs=1e-9)
    if max_fpr == 0.3:  # the seven-metric AU-PRO is the same number
        labels = masks.any(axis=(1, 2)).astype(int)
        assert evaluate(labels, maps.max(axis=(1, 2)), masks, maps)["aupro"] == pytest.approx(expected, abs=1e-9)


def test_aupro_of_images_of_their_own_sizes_equals_brute_force():
    masks, maps = own_sizes(np.random.default_rng(12))
    fprs, pros = brute_force_pro_curve(masks, maps)
    for limit in (0.05, 0.3):
        assert aupro(masks, maps, limit) == pytest.approx(brute_force_area(fprs, pros, limit), abs=1e-9)
    assert aupro(masks, maps, 0.05) != pytest.approx(aupro(masks, maps, 0.3), abs=1e-3)


@pytest.mark.parametrize("threshold", [0.3, 0.8, 1.2, 5.0])
def test_seg_f1_equals_sklearn_on_binarised_pixels(threshold):
    rng = np.random.default_rng(13)
    masks, maps = blobs(rng, 4, (16, 16))
    expected = f1_score(masks.reshape(-1), maps.reshape(-1) >= threshold, zero_division=0.0)
    assert seg_f1(masks, maps, threshold) == pytest.approx(expected, abs=1e-12)
    listed_masks, listed_maps = own_sizes(rng)
    flat_masks = np.concatenate([m.reshape(-1) for m in listed_masks])
    flat_predicted = np.concatenate([m.reshape(-1) for m in listed_maps]) >= threshold
    expected = f1_score(flat_masks, flat_predicted, zero_division=0.0)
    assert seg_f1(listed_masks, listed_maps, threshold) == pytest.approx(expected, abs=1e-12)


def test_seg_f1_counts_pixels_at_the_threshold_as_anomalous():
    masks = np.array([[[True, True, False, False]]])
    maps = np.array([[[0.5, 0.2, 0.5, 0.1]]])
    # at 0.5: TP 1, FP 1, FN 1 -> 2 / (2 + 1 + 1)
    assert seg_f1(masks, maps, 0.5) == pytest.approx(0.5)


def test_segmentation_metrics_keys_and_undefined_cases():
    rng = np.random.default_rng(14)
    masks, maps = blobs(rng, 3, (12, 12))
    result = segmentation_metrics(masks, maps[:, None], 0.9)
    assert set(result) == {"seg_f1", "aupro@0.05", "aupro@0.3"}
    assert result["aupro@0.05"] == pytest.approx(aupro(masks, maps, 0.05))
    normal = np.zeros((2, 8, 8), dtype=bool)
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(seg_f1(normal, np.zeros((2, 8, 8)), 1.0))
    assert seg_f1(normal, np.ones((2, 8, 8)), 1.0) == 0.0  # false alarms only
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(aupro(normal, np.ones((2, 8, 8)), 0.05))


def test_bad_inputs_name_the_image():
    masks = [np.zeros((4, 4), bool), np.zeros((5, 4), bool)]
    maps = [np.zeros((4, 4)), np.zeros((4, 5))]
    with pytest.raises(ValueError, match="image 1"):
        seg_f1(masks, maps, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        aupro([masks[0]], [np.full((4, 4), np.nan)])
    with pytest.raises(ValueError, match="max_fpr"):
        aupro([masks[0]], [maps[0]], 0.0)

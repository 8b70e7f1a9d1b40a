"""Exact metrics against scikit-learn and a brute-force AU-PRO at every threshold."""

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from pro_reference import brute_force_area
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ssmad.metrics import UndefinedMetricWarning, evaluate, evaluate_per_class, ranking_curves, ranking_metrics


def ranking(scores, labels):
    return ranking_metrics(scores[labels == 1], scores[labels == 0])


def sklearn_f1max(labels, scores):
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return np.nanmax(f1)


def random_scores(rng, size, ties, dtype):
    labels = rng.integers(0, 2, size)
    scores = rng.normal(size=size) + 0.8 * labels
    if ties:
        scores = np.round(scores * 3) / 3
    return labels, scores.astype(dtype)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ranking_metrics_equal_sklearn(ties, dtype):
    rng = np.random.default_rng(1 + ties)
    for size in (2, 17, 1000):
        labels, scores = random_scores(rng, size, ties, dtype)
        labels[:2] = [0, 1]
        result = ranking(scores, labels)
        assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
        assert result["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
        assert result["f1max"] == pytest.approx(sklearn_f1max(labels, scores), abs=1e-6)


def corners(x, y):
    """The polyline (x, y) without repeated vertices and without the inner points of its
    horizontal runs: the vertices that shape it."""
    keep = np.concatenate(([True], (np.diff(x) != 0) | (np.diff(y) != 0)))
    x, y = x[keep], y[keep]
    inner = np.concatenate(([False], (y[1:-1] == y[:-2]) & (y[1:-1] == y[2:]), [False]))
    return x[~inner], y[~inner]


@pytest.mark.parametrize("ties", [False, True])
def test_ranking_curves_are_sklearns_roc_and_pr_curves(ties):
    """With ties among positives and between positives and negatives, the ROC polyline is
    scikit-learn's roc_curve through every distinct threshold, and the PR points are its
    precision_recall_curve at the positives' scores."""
    rng = np.random.default_rng(5 + ties)
    for size in (2, 17, 300):
        labels, scores = random_scores(rng, size, ties, np.float64)
        labels[:2] = [0, 1]
        curves = ranking_curves(scores[labels == 1], scores[labels == 0])
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        for ours, theirs in zip(corners(curves.fpr, curves.tpr), corners(fpr, tpr)):
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
        precision, recall, thresholds = precision_recall_curve(labels, scores)
        at_positives = np.isin(thresholds, scores[labels == 1])
        np.testing.assert_allclose(curves.recall, recall[:-1][at_positives][::-1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(curves.precision, precision[:-1][at_positives][::-1], rtol=0, atol=1e-12)
    if ties:  # the case the curves are for: a tie of positives with negatives is one sloped segment
        assert np.any((np.diff(curves.fpr) > 0) & (np.diff(curves.tpr) > 0))


def test_ranking_curves_without_positives_or_negatives():
    assert all(part.size == 0 for part in ranking_curves(np.empty(0), np.array([0.5, 1.0])))
    curves = ranking_curves(np.array([0.2, 0.7, 0.7]), np.empty(0))
    assert curves.fpr.max() == 0 and curves.tpr[-1] == 1
    np.testing.assert_allclose(curves.precision, [1.0, 1.0])


def test_negative_zero_and_negative_scores_rank_like_floats():
    labels = np.array([0, 1, 0, 1, 1, 0, 1])
    scores = np.array([-0.0, 0.0, -3.5, -1e-30, 2.0, 2.0, -3.5], dtype=np.float32)
    result = ranking(scores, labels)
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert result["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_integer_scores_and_float64_beyond_float32_precision():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    int_scores = rng.integers(0, 20, 300)
    fine_scores = 1.0 + rng.integers(0, 4, 300) * 1e-12  # distinct in float64 only
    for scores in (int_scores, fine_scores):
        result = ranking(scores, labels)
        assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
        assert result["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)


def random_masks_and_maps(rng, count, size, ties):
    """A few rectangles and blobs per image, maps higher inside them (plus noise)."""
    masks = np.zeros((count, size, size), dtype=bool)
    for index in range(1, count):
        for _ in range(rng.integers(1, 4)):
            top, left = rng.integers(0, size - 3, 2)
            height, width = rng.integers(1, size // 3, 2)
            masks[index, top:top + height, left:left + width] = True
    masks[1, 0, 0] = masks[1, 1, 1] = True  # diagonal neighbours: one 8-connected region
    maps = rng.random((count, size, size)) + 0.6 * masks
    if ties:
        maps = np.round(maps * 8) / 8
    return masks, maps.astype(np.float32)


def brute_force_aupro(masks, maps, max_fpr=0.3):
    """PRO and FPR evaluated at every unique threshold separately, MVTec's trapezoid."""
    regions = []
    for mask in masks:
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions.append([labelled == k for k in range(1, count + 1)])
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        above = maps >= threshold
        fprs.append((above & normal).sum() / normal.sum())
        covered = [(above[i] & region).sum() / region.sum()
                   for i in range(len(masks)) for region in regions[i]]
        pros.append(np.mean(covered))
    return brute_force_area(np.array(fprs), np.array(pros), max_fpr)


@pytest.mark.parametrize("ties", [False, True])
def test_aupro_equals_brute_force_and_pixel_metrics_equal_sklearn(ties):
    rng = np.random.default_rng(5 + ties)
    masks, maps = random_masks_and_maps(rng, 5, 24, ties)
    labels = masks.any(axis=(1, 2)).astype(int)
    result = evaluate(labels, maps.max(axis=(1, 2)), masks, maps)
    assert result["aupro"] == pytest.approx(brute_force_aupro(masks, maps), abs=1e-6)
    flat_labels, flat_maps = masks.reshape(-1), maps.reshape(-1)
    assert result["p_auroc"] == pytest.approx(roc_auc_score(flat_labels, flat_maps), abs=1e-6)
    assert result["p_ap"] == pytest.approx(average_precision_score(flat_labels, flat_maps), abs=1e-6)
    assert result["p_f1max"] == pytest.approx(sklearn_f1max(flat_labels, flat_maps), abs=1e-6)
    assert result["i_auroc"] == pytest.approx(roc_auc_score(labels, maps.max(axis=(1, 2))), abs=1e-6)


def test_hand_computed_case():
    # One image, one 2-pixel region; maps rank one region pixel first, then a normal pixel.
    masks = np.array([[[1, 1, 0, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.1, 0.8, 0.0]]], dtype=np.float32)
    with pytest.warns(UndefinedMetricWarning, match="no normal images"):
        result = evaluate([1], [0.9], masks, maps)
    # ROC over pixels: positives {0.9, 0.1}, negatives {0.8, 0.0}: 3 of 4 pairs ordered.
    assert result["p_auroc"] == pytest.approx(0.75)
    # PRO: 0.5 at FPR 0, 0.5 up to FPR 0.5 (0.8 is normal), so AU-PRO = 0.5 on [0, 0.3].
    assert result["aupro"] == pytest.approx(0.5)
    # F1 = 2 TP / (TP + FP + P) at thresholds 0.9, 0.8, 0.1: 2/3, 2/4, 4/5.
    assert result["p_f1max"] == pytest.approx(0.8)


def test_torch_inputs_and_channel_dimension():
    rng = np.random.default_rng(6)
    masks, maps = random_masks_and_maps(rng, 4, 16, ties=False)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = maps.max(axis=(1, 2))
    expected = evaluate(labels, scores, masks, maps)
    result = evaluate(torch.tensor(labels), torch.tensor(scores),
                      torch.tensor(masks[:, None], dtype=torch.float32), torch.tensor(maps[:, None]))
    assert result == pytest.approx(expected, abs=1e-12)
    assert set(result) == {"i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro"}


def test_evaluate_per_class_matches_subsets_and_mean():
    rng = np.random.default_rng(7)
    masks, maps = random_masks_and_maps(rng, 8, 16, ties=False)
    masks[4] = False
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = maps.max(axis=(1, 2))
    names = ["b"] * 4 + ["a"] * 4  # images 0 and 4 are normal: one per class
    results = evaluate_per_class(names, labels, scores, masks, maps)
    assert list(results) == ["a", "b", "mean"]
    for name in ("a", "b"):
        index = [i for i, n in enumerate(names) if n == name]
        assert results[name] == pytest.approx(evaluate(labels[index], scores[index], masks[index], maps[index]))
    for metric, value in results["mean"].items():
        assert value == pytest.approx((results["a"][metric] + results["b"][metric]) / 2)
    with pytest.raises(ValueError, match="'mean'"):
        evaluate_per_class(["mean"] * 8, labels, scores, masks, maps)


def test_mean_over_classes_skips_undefined_values():
    masks = np.zeros((4, 8, 8), dtype=bool)
    masks[1, 2:5, 2:5] = True
    maps = np.random.default_rng(10).random((4, 8, 8)).astype(np.float32) + masks
    with pytest.warns(UndefinedMetricWarning):
        results = evaluate_per_class(["a", "a", "b", "b"], [0, 1, 0, 0], [0.1, 0.9, 0.2, 0.3], masks, maps)
    assert np.isnan(results["b"]["i_auroc"])
    assert results["mean"]["i_auroc"] == results["a"]["i_auroc"] == 1.0


def test_no_anomalies_gives_nan_with_warning():
    masks = np.zeros((3, 8, 8), dtype=bool)
    maps = np.random.default_rng(8).random((3, 8, 8)).astype(np.float32)
    with pytest.warns(UndefinedMetricWarning):
        result = evaluate([0, 0, 0], [0.1, 0.2, 0.3], masks, maps)
    assert all(np.isnan(value) for value in result.values())


def test_constant_maps_and_all_tied_scores_are_defined():
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[1, 2:4, 2:4] = True
    maps = np.ones((2, 8, 8), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate([0, 1], [1.0, 1.0], masks, maps)
    assert result["i_auroc"] == pytest.approx(0.5)
    assert result["p_auroc"] == pytest.approx(0.5)
    assert result["p_ap"] == pytest.approx(4 / 128)
    assert result["aupro"] == pytest.approx(0.15)  # the diagonal from (0, 0) to (1, 1)
    with pytest.warns(UndefinedMetricWarning):
        ader = evaluate([0, 1], [1.0, 1.0], masks, maps, protocol="ader")
    assert np.isnan(ader["p_f1max"]) and np.isnan(ader["aupro"])


def test_only_anomalous_images():
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[:, 1:3, 1:3] = True
    maps = np.random.default_rng(9).random((2, 8, 8)).astype(np.float32)
    with pytest.warns(UndefinedMetricWarning):
        result = evaluate([1, 1], [0.4, 0.5], masks, maps)
    assert np.isnan(result["i_auroc"])
    assert result["i_ap"] == pytest.approx(1.0)
    assert np.isfinite(result["p_auroc"])


def test_bad_arguments_raise():
    masks = np.zeros((2, 4, 4), dtype=bool)
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="protocol"):
        evaluate([0, 1], [0, 1], masks, maps, protocol="approximate")
    with pytest.raises(ValueError, match="differ in length"):
        evaluate([0, 1, 1], [0, 1], masks, maps)
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        evaluate([0, 2], [0, 1], masks, maps)
    with pytest.raises(ValueError, match="NaN"):
        evaluate([0, 1], [0, float("nan")], masks, maps)
    with pytest.raises(ValueError, match="same shape"):
        evaluate([0, 1], [0, 1], masks, maps[:, :2])


def test_images_of_their_own_sizes_score_like_their_flattened_pixels():
    """Masks and maps at each image's original size (lists of (H_i, W_i)) give the metrics of the
    concatenated pixels: the same as padding every image with far-away normal pixels removed."""
    rng = np.random.default_rng(3)
    shapes = [(20, 12), (31, 9), (16, 16), (25, 14)]
    masks = [np.zeros(shape, bool) for shape in shapes]
    masks[1][5:9, 2:5] = True
    masks[3][10:12, 3:9] = True
    masks[3][20:23, 1:3] = True
    maps = [rng.random(shape).astype(np.float32) + 0.6 * mask for shape, mask in zip(shapes, masks)]
    labels = np.array([0, 1, 0, 1])
    scores = np.array([m.max() for m in maps])
    ragged = evaluate(labels, scores, masks, maps)
    flat_masks = np.concatenate([m.reshape(-1) for m in masks])
    flat_maps = np.concatenate([m.reshape(-1) for m in maps])
    assert ragged["p_auroc"] == pytest.approx(roc_auc_score(flat_masks, flat_maps), abs=1e-12)
    assert ragged["p_ap"] == pytest.approx(average_precision_score(flat_masks, flat_maps), abs=1e-12)
    # AU-PRO by brute force: every threshold, regions labelled per image, FPR over all normal pixels
    regions = []
    for mask, amap in zip(masks, maps):
        labelled, found = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [amap[labelled == r] for r in range(1, found + 1)]
    normals = np.concatenate([m[~k] for k, m in zip(masks, maps)])
    fpr, pro = [0.0], [0.0]
    for t in np.sort(np.unique(flat_maps))[::-1]:
        fpr.append(float((normals >= t).mean()))
        pro.append(float(np.mean([(r >= t).mean() for r in regions])))
    assert ragged["aupro"] == pytest.approx(brute_force_area(fpr, pro, 0.3), abs=1e-9)
    with pytest.raises(ValueError, match="image 2 differs"):
        evaluate(labels, scores, masks, [maps[0], maps[1], maps[2][:5], maps[3]])

"""The "ader" protocol against slow loops written the way the reference framework writes them."""

import numpy as np
import pytest
from scipy import ndimage

from ssmad.metrics import ader_aupro, ader_pixel_f1max, evaluate


def slow_ader_f1max(masks, maps, eps=1e-8):
    """ADer's mF1_max_px: a loop over 21 thresholds on min-max normalised maps."""
    normalised = (maps - maps.min()) / (maps.max() - maps.min())
    best = []
    for threshold in np.arange(0.0, 1.0 + 1e-3, 0.05):
        predicted = normalised > threshold
        intersect = np.logical_and(masks, predicted).sum()
        precision = intersect / (predicted.sum() + eps)
        recall = intersect / (masks.sum() + eps)
        best.append(2 * precision * recall / (precision + recall + eps))
    return max(best)


def slow_ader_aupro(masks, maps, max_step=200, expect_fpr=0.3):
    """ADer's cal_pro_score: a loop over linear thresholds, regions per image."""
    min_th, max_th = maps.min(), maps.max()
    delta = (max_th - min_th) / max_step
    pros, fprs = [], []
    for threshold in np.arange(min_th, max_th, delta):
        binary = maps > threshold
        pro = []
        for binary_map, mask in zip(binary, masks):
            labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
            for k in range(1, count + 1):
                region = labelled == k
                pro.append(binary_map[region].sum() / region.sum())
        inverse = ~masks
        fprs.append(np.logical_and(inverse, binary).sum() / inverse.sum())
        pros.append(np.mean(pro))
    pros, fprs = np.array(pros), np.array(fprs)
    kept = fprs < expect_fpr
    fprs = fprs[kept]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return -np.trapezoid(pros[kept], fprs)  # FPR decreases as the threshold rises


def masks_and_maps(seed, count=4, size=20, ties=False):
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), dtype=bool)
    masks[1, 2:7, 3:9] = True
    masks[2, 10:12, 10:19] = True
    masks[2, 1:3, 1:3] = True
    masks[3, 5:15, 5:8] = True
    maps = rng.gamma(2.0, 1.0, (count, size, size)) + 2.5 * masks * rng.random((count, size, size))
    if ties:
        maps = np.round(maps * 4) / 4
    return masks, maps.astype(np.float32)


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, False)])
def test_ader_variants_equal_slow_loops(seed, ties):
    masks, maps = masks_and_maps(seed, ties=ties)
    assert ader_pixel_f1max(masks, maps) == pytest.approx(slow_ader_f1max(masks, maps), abs=1e-9)
    assert ader_aupro(masks, maps) == pytest.approx(slow_ader_aupro(masks, maps), abs=1e-9)
    assert ader_aupro(masks, maps, num_thresholds=50) == pytest.approx(
        slow_ader_aupro(masks, maps, max_step=50), abs=1e-9)


def test_ader_protocol_differs_only_in_pixel_f1max_and_aupro():
    masks, maps = masks_and_maps(3)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = maps.max(axis=(1, 2))
    exact = evaluate(labels, scores, masks, maps)
    ader = evaluate(labels, scores, masks, maps, protocol="ader")
    for metric in ("i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap"):
        assert ader[metric] == exact[metric]
    assert ader["p_f1max"] == pytest.approx(slow_ader_f1max(masks, maps), abs=1e-9)
    assert ader["aupro"] == pytest.approx(slow_ader_aupro(masks, maps), abs=1e-9)
    assert ader["p_f1max"] <= exact["p_f1max"] + 1e-9  # 21 thresholds cannot beat all of them

"""Region-level counts of predicted defect masks against the ground truth: what an inspector sees.

A ground-truth defect is an 8-connected component of a ground-truth mask (as for AU-PRO). It is
*found* when a predicted region (an 8-connected component of the predicted mask) overlaps it by at
least one pixel, else *missed*; its IoU is |defect ∩ P| / |defect ∪ P|, P the union of the
predicted regions that overlap it (0 for a missed defect). A predicted region that overlaps no
ground-truth pixel is a *false region*; they are counted on every image and, separately, on the
good images (no ground-truth pixel), per good image.

Masks are (N, H, W) arrays or N (H_i, W_i) arrays, ground truth and prediction of equal shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ssmad.metrics.regions import EIGHT_CONNECTED
from ssmad.metrics.segmentation import PixelArrays, paired_planes


@dataclass
class RegionCounts:
    """found / missed ground-truth defects, their IoUs (one per defect, 0 when missed), false
    regions on all images and on the good ones, and the number of good images."""

    found: int = 0
    missed: int = 0
    false_regions: int = 0
    false_regions_on_good: int = 0
    good_images: int = 0
    ious: list[float] = field(default_factory=list)

    @property
    def false_regions_per_good_image(self) -> float:
        return self.false_regions_on_good / self.good_images if self.good_images else float("nan")

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else float("nan")

    def to_dict(self) -> dict:
        return {"found": self.found, "missed": self.missed, "false_regions": self.false_regions,
                "false_regions_on_good": self.false_regions_on_good, "good_images": self.good_images,
                "false_regions_per_good_image": self.false_regions_per_good_image, "mean_iou": self.mean_iou}


def _add_image(counts: RegionCounts, truth: np.ndarray, predicted: np.ndarray) -> None:
    defects, num_defects = ndimage.label(truth, structure=EIGHT_CONNECTED)
    regions, num_regions = ndimage.label(predicted, structure=EIGHT_CONNECTED)
    # (defect, region) pairs that share a pixel; label 0 is the background of either.
    pairs = np.unique(defects.reshape(-1) * (num_regions + 1) + regions.reshape(-1))
    touching = np.zeros((num_defects + 1, num_regions + 1), dtype=bool)
    touching[pairs // (num_regions + 1), pairs % (num_regions + 1)] = True
    touching[0, :] = touching[:, 0] = False
    false = int(num_regions - np.count_nonzero(touching.any(axis=0)[1:]))
    counts.false_regions += false
    if num_defects == 0:
        counts.good_images += 1
        counts.false_regions_on_good += false
    for defect in range(1, num_defects + 1):
        overlapping = np.flatnonzero(touching[defect])
        if overlapping.size == 0:
            counts.missed += 1
            counts.ious.append(0.0)
            continue
        counts.found += 1
        inside, covered = defects == defect, np.isin(regions, overlapping)
        counts.ious.append(float(np.count_nonzero(inside & covered) / np.count_nonzero(inside | covered)))


def region_counts(truth_masks: PixelArrays, predicted_masks: PixelArrays) -> RegionCounts:
    """:class:`RegionCounts` of predicted masks (bool, or > 0.5) against ground-truth masks."""
    truths, predictions = paired_planes(truth_masks, predicted_masks)
    counts = RegionCounts()
    for truth, predicted in zip(truths, predictions):
        _add_image(counts, truth, predicted if predicted.dtype == np.bool_ else predicted > 0.5)
    return counts

"""Metrics of MVTec AD 2 (Heckler-Kram et al., 2025) beside the seven: SegF1 and AU-PRO to a chosen
false-positive-rate limit.

- SegF1: the F1 score of the binary segmentation ``map >= threshold`` against the ground truth,
  counted over every pixel of every image at once (pooled TP, FP, FN, not a mean over images):
  ``2 TP / (2 TP + FP + FN)``. MVTec AD 2 sets the threshold from defect-free validation images
  only (``ssmad.engine.pixel_thresholds``).
- AU-PRO to ``max_fpr``: the area under the (FPR, PRO) curve over every threshold, on
  ``[0, max_fpr]``, divided by ``max_fpr`` (``ssmad.metrics.ranking``). MVTec AD 2 reports it at
  ``max_fpr = 0.05``; MVTec AD's tables at 0.3.

Masks and maps are (N, H, W) arrays (or (N, 1, H, W)), or sequences of N (H_i, W_i) arrays when
the images have sizes of their own (maps at each image's original resolution).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ssmad.metrics.ranking import ranking_metrics
from ssmad.metrics.regions import PixelScores, split_pixels
from ssmad.metrics.undefined import warn_undefined

AUPRO_FPR_LIMITS = (0.05, 0.3)  # MVTec AD 2's limit, MVTec AD's limit

PixelArrays = np.ndarray | Sequence[np.ndarray]


def _planes(values: PixelArrays, name: str) -> list[np.ndarray]:
    """(N, H, W), (N, 1, H, W) or N arrays (H_i, W_i) / (1, H_i, W_i) -> N numpy arrays (H_i, W_i)."""
    if isinstance(values, np.ndarray):
        if values.ndim == 4 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 3:
            raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {values.shape}")
        return list(values)
    planes = [np.asarray(value) for value in values]
    planes = [plane[0] if plane.ndim == 3 and plane.shape[0] == 1 else plane for plane in planes]
    wrong = [index for index, plane in enumerate(planes) if plane.ndim != 2]
    if wrong:
        raise ValueError(f"{name}[{wrong[0]}] must be a 2-D (H, W) array, got shape {planes[wrong[0]].shape}")
    return planes


def paired_planes(masks: PixelArrays, maps: PixelArrays) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Masks (bool, anomalous where > 0.5) and maps as N pairs of (H_i, W_i) arrays of equal shapes.

    Raises ValueError naming the first image whose mask and map differ, or a NaN/inf in the maps.
    """
    mask_planes, map_planes = _planes(masks, "masks"), _planes(maps, "maps")
    if len(mask_planes) != len(map_planes):
        raise ValueError(f"{len(mask_planes)} masks but {len(map_planes)} maps; give one mask per map")
    for index, (mask, values) in enumerate(zip(mask_planes, map_planes)):
        if mask.shape != values.shape:
            raise ValueError(f"image {index}: mask {mask.shape} and map {values.shape} differ in shape")
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"image {index}: the map contains NaN or infinite values; fix the model output first")
    return [mask if mask.dtype == np.bool_ else mask > 0.5 for mask in mask_planes], map_planes


def seg_f1(masks: PixelArrays, maps: PixelArrays, threshold: float) -> float:
    """SegF1: F1 of ``map >= threshold`` against ``masks`` over all pixels of all images.

    NaN with an ``UndefinedMetricWarning`` when there is neither an anomalous pixel nor a
    predicted one (0 / 0); 0.0 when only one of the two is empty.
    """
    mask_planes, map_planes = paired_planes(masks, maps)
    true_pos = false_pos = false_neg = 0
    for mask, values in zip(mask_planes, map_planes):
        predicted = values >= threshold
        hits = int(np.count_nonzero(predicted & mask))
        true_pos += hits
        false_pos += int(np.count_nonzero(predicted)) - hits
        false_neg += int(np.count_nonzero(mask)) - hits
    denominator = 2 * true_pos + false_pos + false_neg
    if denominator == 0:
        return warn_undefined("SegF1", "there are no anomalous pixels and none is predicted")
    return 2.0 * true_pos / denominator


def _aupro_of_split(pixels: PixelScores, max_fpr: float) -> float:
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    if pixels.positive_scores.size == 0 or pixels.negative_sorted.size == 0:
        return warn_undefined(f"AU-PRO@{max_fpr:g}", "there are no anomalous or no normal pixels")
    return ranking_metrics(pixels.positive_scores, pixels.negative_sorted, pixels.pro_weights,
                           max_fpr=max_fpr, negatives_sorted=True)["aupro"]


def aupro(masks: PixelArrays, maps: PixelArrays, max_fpr: float = 0.3) -> float:
    """Exact AU-PRO over every threshold, integrated to ``max_fpr`` and divided by it.

    NaN with an ``UndefinedMetricWarning`` without anomalous or without normal pixels.
    """
    return _aupro_of_split(split_pixels(*paired_planes(masks, maps)), max_fpr)


def aupro_key(max_fpr: float) -> str:
    """The result key of AU-PRO to ``max_fpr``: ``aupro@0.05``, ``aupro@0.3``."""
    return f"aupro@{max_fpr:g}"


def segmentation_metrics(
    masks: PixelArrays,
    maps: PixelArrays,
    pixel_threshold: float,
    fpr_limits: Sequence[float] = AUPRO_FPR_LIMITS,
) -> dict[str, float]:
    """MVTec AD 2's pixel metrics: {"seg_f1", "aupro@0.05", "aupro@0.3"} (one AU-PRO key per limit),
    as fractions in [0, 1]; the pixels are split once for every limit."""
    mask_planes, map_planes = paired_planes(masks, maps)
    result = {"seg_f1": seg_f1(mask_planes, map_planes, pixel_threshold)}
    pixels = split_pixels(mask_planes, map_planes)
    result.update({aupro_key(limit): _aupro_of_split(pixels, limit) for limit in fpr_limits})
    return result

"""Defect regions of one anomaly map: the pixel decision an inspector acts on.

The mask is ``map >= threshold``; the regions are its 8-connected components (the connectivity of
the ground-truth regions of AU-PRO, ``ssmad.metrics.regions.EIGHT_CONNECTED``) with at least
``min_area`` pixels. Smaller components are dropped from the regions *and* from the mask, so the
mask is exactly the union of the regions.

``min_area`` counts pixels of the map as given: at the original image resolution when the map is
(the predictions are). Default :data:`DEFAULT_MIN_AREA` = 1 keeps every component, which keeps the
default pixel rule's promise (``ssmad.engine.pixel_thresholds``: pixel threshold = image
threshold, and the image score is the map's maximum): every image decided anomalous has at least
one region, and no image decided normal has one. A larger minimum area removes specks (useful with
the lower thresholds of the other pixel rules) but can leave an anomalous image without a region.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ssmad.metrics.regions import EIGHT_CONNECTED

DEFAULT_MIN_AREA = 1  # pixels of the original image; see the module docstring


@dataclass(frozen=True)
class DefectRegion:
    """One connected region of a defect mask, in pixels of the map it was found on.

    box: (left, top, right, bottom), right and bottom exclusive (PIL's crop convention: the
    region's width is right - left). area_px: its pixels; area_fraction: area_px / (H * W).
    peak_score / mean_score: the maximum / mean map value over its pixels. centroid: (x, y), the
    mean column and row of its pixels.
    """

    box: tuple[int, int, int, int]
    area_px: int
    area_fraction: float
    peak_score: float
    mean_score: float
    centroid: tuple[float, float]

    def to_dict(self) -> dict:
        """JSON-ready values (lists for the box and centroid)."""
        record = asdict(self)
        record["box"], record["centroid"] = list(self.box), list(self.centroid)
        return record


def _one_map(anomaly_map: np.ndarray) -> np.ndarray:
    values = np.asarray(anomaly_map)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        raise ValueError(f"anomaly_map must be one (H, W) map, got shape {values.shape}")
    return values


def defect_regions(
    anomaly_map: np.ndarray, threshold: float, min_area: int = DEFAULT_MIN_AREA
) -> tuple[np.ndarray, list[DefectRegion]]:
    """The defect mask and regions of one map.

    Args:
        anomaly_map: (H, W) anomaly scores of one image (or (1, H, W)).
        threshold: pixels with a score >= threshold are anomalous.
        min_area: the smallest region kept, in pixels (>= 1).
    Returns (mask (H, W) bool, the union of the kept regions; regions, highest peak first).
    """
    values = _one_map(anomaly_map)
    return mask_regions(values >= threshold, values, min_area)


def mask_regions(
    mask: np.ndarray, anomaly_map: np.ndarray, min_area: int = DEFAULT_MIN_AREA
) -> tuple[np.ndarray, list[DefectRegion]]:
    """The regions of a given defect mask (H, W) bool, scored on ``anomaly_map`` (H, W): as
    :func:`defect_regions`, for a mask made otherwise (e.g. at another resolution and resized).
    Returns (the mask less its components below ``min_area``; regions, highest peak first)."""
    if min_area < 1:
        raise ValueError(f"min_area is a number of pixels >= 1, got {min_area}")
    values = _one_map(anomaly_map)
    if np.shape(mask) != values.shape:
        raise ValueError(f"the mask {np.shape(mask)} and the anomaly map {values.shape} must have one shape")
    labelled, count = ndimage.label(np.asarray(mask, dtype=bool), structure=EIGHT_CONNECTED)
    if count == 0:
        return np.zeros(values.shape, dtype=bool), []
    flat_labels = labelled.reshape(-1)
    areas = np.bincount(flat_labels, minlength=count + 1)[1:]
    kept = np.flatnonzero(areas >= min_area) + 1  # labels of the kept regions
    mask = np.isin(labelled, kept)
    if kept.size == 0:
        return mask, []
    rows, columns = np.indices(values.shape)
    weights = {name: np.bincount(flat_labels, weights=w.reshape(-1), minlength=count + 1)[kept]
               for name, w in (("score", values.astype(np.float64)), ("row", rows), ("column", columns))}
    peaks = ndimage.maximum(values, labelled, kept)
    slices = ndimage.find_objects(labelled)
    kept_areas = areas[kept - 1]
    regions = [
        DefectRegion(
            box=(slices[label - 1][1].start, slices[label - 1][0].start, slices[label - 1][1].stop, slices[label - 1][0].stop),
            area_px=int(area),
            area_fraction=float(area / values.size),
            peak_score=float(peak),
            mean_score=float(score / area),
            centroid=(float(column / area), float(row / area)),
        )
        for label, area, peak, score, row, column in zip(
            kept, kept_areas, np.atleast_1d(peaks), weights["score"], weights["row"], weights["column"]
        )
    ]
    regions.sort(key=lambda region: -region.peak_score)
    return mask, regions

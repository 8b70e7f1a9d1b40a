"""One image's pixel decision: the defect mask and regions at the image's original resolution.

The mask is taken from the map the image score is computed from, the blurred map at the model's
resolution: ``model_map >= pixel_threshold``, then brought to the original size by
:func:`resize_mask`. The regions are its 8-connected components of at least ``min_area`` pixels of
the original image (``ssmad.metrics.defect_regions``), their peak and mean scores read on the map
resized to the original size (bilinear, what ``predict`` returns as the map; so a region's peak can
be a little below the threshold where interpolation smoothed it).

Why not threshold the resized map: bilinear resizing can lower the peak below the threshold, and
an image decided anomalous (score <= the model map's maximum, and >= threshold) would have no region.
Thresholding first and resizing the mask keeps the default rule's promise exactly (pixel threshold
= image threshold for the images decided anomalous, ``ssmad.engine.pixel_thresholds``; decisions
``>=`` on both sides): with ``min_area`` 1, every image decided anomalous has at least one region
and no image decided normal has one.
"""

from __future__ import annotations

import numpy as np

from ssmad.data.roi import Roi
from ssmad.metrics.defect_regions import DEFAULT_MIN_AREA, DefectRegion, mask_regions


def resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """A mask (h, w) bool -> (H, W): nearest neighbour (each output pixel takes the input pixel its
    centre falls in), plus, when shrinking, each marked input pixel marks the output pixel its
    centre falls in, so no marked pixel is lost: the result is empty exactly when ``mask`` is."""
    mask = np.asarray(mask, dtype=bool)
    (height, width), (out_height, out_width) = mask.shape, size_hw
    if (height, width) == (out_height, out_width):
        return mask.copy()
    rows = np.minimum(((np.arange(out_height) + 0.5) * height / out_height).astype(np.int64), height - 1)
    columns = np.minimum(((np.arange(out_width) + 0.5) * width / out_width).astype(np.int64), width - 1)
    resized = mask[rows[:, None], columns[None, :]]
    marked_rows, marked_columns = np.nonzero(mask)
    target_rows = np.minimum(((marked_rows + 0.5) * out_height / height).astype(np.int64), out_height - 1)
    target_columns = np.minimum(((marked_columns + 0.5) * out_width / width).astype(np.int64), out_width - 1)
    resized[target_rows, target_columns] = True
    return resized


def pixel_decision(
    model_map: np.ndarray,
    image_map: np.ndarray,
    pixel_threshold: float,
    min_area: int = DEFAULT_MIN_AREA,
    roi: Roi | None = None,
) -> tuple[np.ndarray, list[DefectRegion]]:
    """The mask (H, W) bool and regions of one image.

    model_map: (h, w) the blurred map at the model's resolution (the image score's map);
    image_map: (H, W) the same map at the image's size; pixel_threshold: mask = model_map >= it;
    min_area: the smallest region kept, in pixels of the original image; roi: the region of
    interest the model saw, the mask resized to it and placed into the image (nothing outside).
    """
    above = np.asarray(model_map) >= pixel_threshold
    if roi is None:
        mask = resize_mask(above, np.shape(image_map))
    else:
        mask = roi.place(resize_mask(above, roi.size_hw), np.shape(image_map))
    return mask_regions(mask, image_map, min_area)

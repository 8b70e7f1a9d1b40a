"""Ground-truth regions for AU-PRO: 8-connected components of every mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number the 8-connected anomalous regions of all masks, globally.

    Args:
        masks: (N, H, W) bool.
    Returns (region ids (N, H, W) uint32: 0 outside anomalies, 1..R inside, unique across
    images; region sizes (R,) int64 in pixels).
    """
    ids = np.zeros(masks.shape, dtype=np.uint32)
    sizes = [np.zeros(0, dtype=np.int64)]
    count = 0
    for index in np.flatnonzero(masks.reshape(masks.shape[0], -1).any(axis=1)):
        labelled, found = ndimage.label(masks[index], structure=EIGHT_CONNECTED)
        ids[index] = np.where(labelled > 0, labelled + count, 0)
        sizes.append(np.bincount(labelled.reshape(-1), minlength=found + 1)[1:])
        count += found
    return ids, np.concatenate(sizes)


def region_pixel_weights(sizes: np.ndarray) -> np.ndarray:
    """(R + 1,) float64: weight of one pixel of region k = 1 / (R * |k|); index 0 is 0."""
    weights = np.zeros(sizes.size + 1, dtype=np.float64)
    weights[1:] = 1.0 / (sizes.size * sizes.astype(np.float64))
    return weights

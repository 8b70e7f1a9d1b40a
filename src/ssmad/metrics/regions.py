"""Anomalous pixels and normal pixels of a set of maps, with the ground-truth regions.

Regions (for AU-PRO) are the 8-connected components of every mask, numbered across images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class PixelScores:
    """Map values split by the masks.

    positive_scores: (P,) values of anomalous pixels, in C order of the masks.
    positive_regions: (P,) int64 region index (0..R-1) of each anomalous pixel.
    region_sizes: (R,) int64 pixels per region.
    negative_sorted: (N,) values of normal pixels, ascending.
    """

    positive_scores: np.ndarray
    positive_regions: np.ndarray
    region_sizes: np.ndarray
    negative_sorted: np.ndarray

    @property
    def pro_weights(self) -> np.ndarray:
        """(P,) float64: weight 1 / (R * |region|) of each anomalous pixel."""
        sizes = self.region_sizes.astype(np.float64)
        return 1.0 / (sizes.size * sizes[self.positive_regions])


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Regions of all masks. masks (N, H, W) bool.

    Returns (region index (P,) int64 of every True pixel, in the C order of `masks[masks]`;
    region sizes (R,) int64).
    """
    indices = [np.zeros(0, dtype=np.int64)]
    sizes = [np.zeros(0, dtype=np.int64)]
    count = 0
    for image in np.flatnonzero(masks.reshape(masks.shape[0], -1).any(axis=1)):
        labelled, found = ndimage.label(masks[image], structure=EIGHT_CONNECTED)
        indices.append(labelled[masks[image]].astype(np.int64) + (count - 1))
        sizes.append(np.bincount(labelled.reshape(-1), minlength=found + 1)[1:])
        count += found
    return np.concatenate(indices), np.concatenate(sizes)


def split_pixels(masks: np.ndarray, maps: np.ndarray) -> PixelScores:
    """Split maps (N, H, W) by masks (N, H, W) bool; sorts the normal pixels once."""
    regions, sizes = label_regions(masks)
    negatives = maps[~masks]
    negatives.sort()
    return PixelScores(maps[masks], regions, sizes, negatives)

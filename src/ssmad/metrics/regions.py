"""Anomalous pixels and normal pixels of a set of maps, with the ground-truth regions.

Regions (for AU-PRO) are the 8-connected components of every mask, numbered across images.
Masks and maps are (N, H, W) arrays, or sequences of N (H_i, W_i) arrays when the images have
sizes of their own (maps at each image's original resolution).
"""

from __future__ import annotations

from collections.abc import Sequence
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


def label_regions(masks: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Regions of all masks: (N, H, W) bool, or N bool arrays (H_i, W_i).

    Returns (region index (P,) int64 of every True pixel, image by image in C order, as
    `masks[masks]` orders them; region sizes (R,) int64).
    """
    indices = [np.zeros(0, dtype=np.int64)]
    sizes = [np.zeros(0, dtype=np.int64)]
    count = 0
    for mask in masks:
        if not mask.any():
            continue
        labelled, found = ndimage.label(mask, structure=EIGHT_CONNECTED)
        indices.append(labelled[mask].astype(np.int64) + (count - 1))
        sizes.append(np.bincount(labelled.reshape(-1), minlength=found + 1)[1:])
        count += found
    return np.concatenate(indices), np.concatenate(sizes)


def split_pixels(masks: np.ndarray | Sequence[np.ndarray], maps: np.ndarray | Sequence[np.ndarray]) -> PixelScores:
    """Split maps by masks of the same shapes, (N, H, W) arrays or N (H_i, W_i) arrays; sorts
    the normal pixels once."""
    regions, sizes = label_regions(masks)
    if isinstance(masks, np.ndarray) and isinstance(maps, np.ndarray):
        positives, negatives = maps[masks], maps[~masks]
    else:
        positives = np.concatenate([m[k] for k, m in zip(masks, maps)]) if len(maps) else np.zeros(0, np.float32)
        negatives = np.concatenate([m[~k] for k, m in zip(masks, maps)]) if len(maps) else np.zeros(0, np.float32)
    negatives.sort()
    return PixelScores(positives, regions, sizes, negatives)

"""Routes: every sequence a 2-D scan layer runs over one feature map, as index lists.

A route is a visiting order of the L = H*W raster positions with the steps at which the state
restarts from zero. Routes come in G groups of R (one group per scan direction, sharing that
direction's parameters); each route has a weight in the group's sum. With routes, the K
directions and every pyramid level of an SS2D layer are one scan over the map in raster layout:
no gathered copies of the map, one projection of dt, B and C for all levels.

The pyramid (Pyramid-Mamba's PSS): level p splits the map into 2^p x 2^p near-equal
sub-regions and scans each on its own, so a level-p route visits the sub-regions one after the
other, each in the direction's order on that sub-region, with a restart at each sub-region.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from .directions import direction_indices

PYRAMID_MERGES = ("mean", "nested")


@dataclass(frozen=True)
class Routes:
    """G groups of R routes over sequences of length L.

    index (G, R, L) int64: raster position visited at each step;
    starts (G, R, L) bool: the state restarts from zero before that step (True at step 0);
    weight (G, R) float32: the route's weight in its group's output.
    """

    index: Tensor
    starts: Tensor
    weight: Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        """(G, R, L)."""
        return tuple(self.index.shape)

    def to(self, device: torch.device | str) -> Routes:
        """The same routes with their tensors on ``device``."""
        return Routes(self.index.to(device), self.starts.to(device), self.weight.to(device))


def split_segments(size: int, parts: int) -> list[tuple[int, int, int]]:
    """Near-equal split of a side of ``size`` pixels into ``parts`` sub-segments.

    Returns runs ``(start, count, length)``: ``count`` consecutive segments of ``length`` pixels
    beginning at ``start``. The first ``size % parts`` segments are one pixel longer than the
    rest; at most two runs. A side shorter than ``parts`` is split into single pixels.
    """
    parts = min(parts, size)
    small, extra = divmod(size, parts)
    runs = [(0, extra, small + 1), (extra * (small + 1), parts - extra, small)]
    return [run for run in runs if run[1] > 0]


def level_weights(levels: int, merge: str) -> list[float]:
    """Weight of each pyramid level 0..P in the combined output.

    ``mean``: 1 / (P + 1) each (the official code's equal average).
    ``nested``: the paper's recursive average. With S_p the level-p output (every level-p
    sub-region scanned on its own), the pyramid output of a region at level p is
    O_p = (S_p + O_{p+1}) / 2 for p < P and O_P = S_P, i.e. each sub-region's scan is averaged
    with the pyramid output of its own four sub-regions. Unrolled: w_p = 2^-(p+1) for p < P
    and w_P = 2^-P (P = 2: 1/2, 1/4, 1/4). Both sum to 1.
    """
    if merge == "mean":
        return [1.0 / (levels + 1)] * (levels + 1)
    if merge == "nested":
        return [2.0 ** -(p + 1) for p in range(levels)] + [2.0**-levels]
    raise ValueError(f"pyramid_merge must be one of {PYRAMID_MERGES}, got {merge!r}")


def sub_regions(height: int, width: int, parts: int) -> list[tuple[int, int, int, int]]:
    """The ``parts`` x ``parts`` near-equal sub-regions of an H x W map, row by row:
    (top, left, height, width) each (:func:`split_segments` along both sides)."""
    rows = [(start + i * size, size) for start, count, size in split_segments(height, parts) for i in range(count)]
    cols = [(start + i * size, size) for start, count, size in split_segments(width, parts) for i in range(count)]
    return [(top, left, h, w) for top, h in rows for left, w in cols]


def pyramid_routes(
    kind: str, height: int, width: int, num_directions: int, levels: int, merge: str = "mean",
    device: torch.device | str = "cpu",
) -> Routes:
    """Routes of an SS2D layer on an H x W map: G = K directions, R = P + 1 levels.

    Route (k, p) visits the 2^p x 2^p sub-regions of level p in turn, each in direction k's
    order on that sub-region (:func:`~ssmad.ops.direction_indices`), restarting at each one;
    its weight is level p's (:func:`level_weights`). Cached per device (read-only tensors).
    """
    key = (kind, int(height), int(width), int(num_directions), int(levels), merge)
    return _routes_on(key, torch.device(device))


@lru_cache(maxsize=256)
def _routes_on(key: tuple, device: torch.device) -> Routes:
    return _cached_pyramid_routes(*key).to(device)


@lru_cache(maxsize=128)
def _cached_pyramid_routes(kind: str, height: int, width: int, num_directions: int, levels: int, merge: str) -> Routes:
    weights = level_weights(levels, merge)
    index, starts = [], []
    for level in range(levels + 1):
        level_index, level_starts = [], []
        for top, left, h, w in sub_regions(height, width, 2**level):
            local = direction_indices(kind, h, w, num_directions)  # (K, h*w) positions in the sub-region
            level_index.append((top + local // w) * width + left + local % w)
            first = torch.zeros(num_directions, h * w, dtype=torch.bool)
            first[:, 0] = True
            level_starts.append(first)
        index.append(torch.cat(level_index, dim=1))
        starts.append(torch.cat(level_starts, dim=1))
    weight = torch.tensor(weights, dtype=torch.float32).expand(num_directions, -1).contiguous()
    return Routes(torch.stack(index, dim=1), torch.stack(starts, dim=1), weight)


@lru_cache(maxsize=64)
def identity_routes(groups: int, length: int) -> Routes:
    """One route per group: positions 0..L-1 in order, no restart after step 0, weight 1
    (the plain selective scan). Cached like the pyramid's: making them took 3-6 ms of a 145 ms
    scan call at (8, 4x128, 4096) in torch.profiler."""
    index = torch.arange(length).expand(groups, 1, length).contiguous()
    starts = torch.zeros(groups, 1, length, dtype=torch.bool)
    starts[..., 0] = True
    return Routes(index, starts, torch.ones(groups, 1))

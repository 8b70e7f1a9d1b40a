"""Pyramidal Scanning Strategy (PSS) of Pyramid-Mamba.

Level p = 0..P splits the map into 2^p x 2^p sub-regions and scans each one independently
with the same weights; the sub-regions become extra batch entries, so a level is one call of
the scan (or a few when 2^p does not divide a side); the outputs are put back in place and
the levels are combined.
"""

from __future__ import annotations

from typing import Callable

import torch

ScanFn = Callable[[torch.Tensor], torch.Tensor]

PYRAMID_MERGES = ("mean", "nested")


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


def scan_regions(x: torch.Tensor, scan_fn: ScanFn, parts: int) -> torch.Tensor:
    """Scan each of the ``parts`` x ``parts`` sub-regions of ``x`` independently.

    x: (B, D, H, W); ``scan_fn`` maps (n, D, h, w) -> (n, D, h, w), each map on its own.
    Sub-regions of equal size are batched: one ``scan_fn`` call per size (1 when ``parts``
    divides both sides, at most 4). Returns (B, D, H, W).
    """
    batch, channels, height, width = x.shape
    rows = []
    for h0, nh, h in split_segments(height, parts):
        row = []
        for w0, nw, w in split_segments(width, parts):
            block = x[:, :, h0 : h0 + nh * h, w0 : w0 + nw * w]
            regions = (
                block.reshape(batch, channels, nh, h, nw, w)
                .permute(0, 2, 4, 1, 3, 5)
                .reshape(batch * nh * nw, channels, h, w)
            )
            scanned = scan_fn(regions).reshape(batch, nh, nw, channels, h, w).permute(0, 3, 1, 4, 2, 5)
            row.append(scanned.reshape(batch, channels, nh * h, nw * w))
        rows.append(torch.cat(row, dim=3))
    return torch.cat(rows, dim=2)


def level_weights(levels: int, merge: str) -> list[float]:
    """Weight of each level 0..P in the combined output.

    ``mean``: 1 / (P + 1) each (the official code's equal average).
    ``nested``: the paper's recursive average. With S_p the level-p output (every level-p
    sub-region scanned on its own), the pyramid output of a region at level p is
    O_p = (S_p + O_{p+1}) / 2 for p < P and O_P = S_P, i.e. each sub-region's scan is averaged
    with the pyramid output of its own four sub-regions. Unrolled: w_p = 2^-(p+1) for p < P
    and w_P = 2^-P (P = 2: 1/2, 1/4, 1/4).
    """
    if merge == "mean":
        return [1.0 / (levels + 1)] * (levels + 1)
    if merge == "nested":
        return [2.0 ** -(p + 1) for p in range(levels)] + [2.0**-levels]
    raise ValueError(f"pyramid_merge must be one of {PYRAMID_MERGES}, got {merge!r}")


def pyramid_scan(x: torch.Tensor, scan_fn: ScanFn, levels: int, merge: str = "mean") -> torch.Tensor:
    """Pyramidal scan: levels 0..P of ``scan_regions`` combined by ``level_weights``.

    x: (B, D, H, W) -> (B, D, H, W). ``levels = 0`` is the plain scan ``scan_fn(x)``.
    """
    weights = level_weights(levels, merge)
    out = scan_fn(x)
    if levels == 0:
        return out
    out = out * weights[0]
    for p in range(1, levels + 1):
        out = out + weights[p] * scan_regions(x, scan_fn, 2**p)
    return out

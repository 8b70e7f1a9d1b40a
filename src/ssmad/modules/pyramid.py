"""Pyramidal Scanning Strategy (PSS) of Pyramid-Mamba.

Level p = 0..P splits the map into 2^p x 2^p sub-regions and scans each one independently
with the same weights; the sub-regions become extra batch entries, so a level is one call of
the scan (or a few when 2^p does not divide a side); the outputs are put back in place and
the levels are combined. This is the path of every device but the CPU, where SS2D runs the
same computation as one routed scan (``ssmad.ops.pyramid_routes``).
"""

from __future__ import annotations

from typing import Callable

import torch

from ssmad.ops.routes import level_weights, split_segments

ScanFn = Callable[[torch.Tensor], torch.Tensor]


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

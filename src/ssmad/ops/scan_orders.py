"""Orderings of an H x W grid for 2-D selective scans: sweep, scan, zorder, zigzag, hilbert."""

from functools import lru_cache

import torch
from torch import Tensor

SCAN_ORDERS = ("sweep", "scan", "zorder", "zigzag", "hilbert")


def scan_order(kind: str, height: int, width: int) -> Tensor:
    """Raster positions (row * width + col) of an H x W grid in the visiting order of ``kind``.

    Returns a LongTensor (H*W,) that is a permutation of range(H*W), cached per arguments
    (treat it as read-only). Kinds:
    - ``sweep``: raster order, row after row;
    - ``scan``: boustrophedon, odd rows right to left;
    - ``zorder``: Morton order of (row, col), codes outside the grid skipped;
    - ``zigzag``: anti-diagonals, alternating direction (JPEG order);
    - ``hilbert``: generalised Hilbert curve for rectangles ("gilbert"); consecutive cells are
      4-neighbours, except for exactly one diagonal step on grids whose longer side is odd and
      whose shorter side is even and >= 4 (e.g. 4x5, 6x7).
    """
    if kind not in SCAN_ORDERS:
        raise ValueError(f"unknown scan order {kind!r}; choose one of {', '.join(SCAN_ORDERS)}")
    if height < 1 or width < 1:
        raise ValueError(f"scan order needs height, width >= 1, got {height} x {width}")
    return _cached_order(kind, int(height), int(width))


@lru_cache(maxsize=256)
def _cached_order(kind: str, height: int, width: int) -> Tensor:
    rows = torch.arange(height).repeat_interleave(width)  # (H*W,) row of each raster position
    cols = torch.arange(width).repeat(height)  # (H*W,)
    if kind == "sweep":
        return torch.arange(height * width)
    if kind == "scan":
        keys = rows * width + torch.where(rows % 2 == 1, width - 1 - cols, cols)
        return torch.argsort(keys)
    if kind == "zorder":
        return torch.argsort(_morton_code(rows, cols))
    if kind == "zigzag":
        diagonal = rows + cols
        along = torch.where(diagonal % 2 == 1, rows, height - 1 - rows)
        return torch.argsort(diagonal * height + along)
    return torch.tensor([r * width + c for r, c in _gilbert(height, width)], dtype=torch.long)


def _morton_code(rows: Tensor, cols: Tensor) -> Tensor:
    """Interleave the bits of (rows, cols) (N,) -> (N,) codes: col bits even, row bits odd."""
    code = torch.zeros_like(rows)
    bits = max(int(rows.max()), int(cols.max()), 1).bit_length()
    for bit in range(bits):
        code |= ((cols >> bit) & 1) << (2 * bit)
        code |= ((rows >> bit) & 1) << (2 * bit + 1)
    return code


def _gilbert(height: int, width: int) -> list[tuple[int, int]]:
    """(row, col) cells of the generalised Hilbert curve of an H x W grid, in visiting order."""
    cells: list[tuple[int, int]] = []
    if width >= height:
        _gilbert_fill(cells, 0, 0, width, 0, 0, height)
    else:
        _gilbert_fill(cells, 0, 0, 0, height, width, 0)
    return cells


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _gilbert_fill(cells: list, x: int, y: int, ax: int, ay: int, bx: int, by: int) -> None:
    """Append the cells of the rectangle at (x, y) with major axis (ax, ay) and minor (bx, by)."""
    w, h = abs(ax + ay), abs(bx + by)
    dax, day = _sign(ax), _sign(ay)  # unit major direction
    dbx, dby = _sign(bx), _sign(by)  # unit minor direction
    if h == 1:
        cells.extend((y + i * day, x + i * dax) for i in range(w))
        return
    if w == 1:
        cells.extend((y + i * dby, x + i * dbx) for i in range(h))
        return
    ax2, ay2 = ax // 2, ay // 2
    bx2, by2 = bx // 2, by // 2
    w2, h2 = abs(ax2 + ay2), abs(bx2 + by2)
    if 2 * w > 3 * h:
        if w2 % 2 and w > 2:  # prefer even steps
            ax2, ay2 = ax2 + dax, ay2 + day
        _gilbert_fill(cells, x, y, ax2, ay2, bx, by)
        _gilbert_fill(cells, x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)
        return
    if h2 % 2 and h > 2:  # prefer even steps
        bx2, by2 = bx2 + dbx, by2 + dby
    _gilbert_fill(cells, x, y, bx2, by2, ax2, ay2)
    _gilbert_fill(cells, x + bx2, y + by2, ax, ay, bx - bx2, by - by2)
    _gilbert_fill(
        cells,
        x + (ax - dax) + (bx2 - dbx),
        y + (ay - day) + (by2 - dby),
        -bx2,
        -by2,
        -(ax - ax2),
        -(ay - ay2),
    )

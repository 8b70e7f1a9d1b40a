"""Turn a (B, C, H, W) map into K directional sequences and merge K sequence outputs back."""

from functools import lru_cache

import torch
from torch import Tensor

from .scan_orders import scan_order

NUM_DIRECTIONS = (2, 4, 8)


def direction_indices(kind: str, height: int, width: int, num_directions: int) -> Tensor:
    """Raster positions visited by each direction, in visiting order: LongTensor (K, H*W).

    Rows, K = 8: the order ``kind`` on the map, reversed; on the transposed map, reversed; on
    the map rotated by 90 degrees (``torch.rot90``), reversed; on the transposed rotated map,
    reversed. K = 4 keeps the first four rows, K = 2 the first two. Cached (read-only).
    """
    if num_directions not in NUM_DIRECTIONS:
        raise ValueError(f"num_directions must be one of {NUM_DIRECTIONS}, got {num_directions}")
    scan_order(kind, height, width)  # validates kind and size
    return _cached_indices(kind, int(height), int(width), int(num_directions))


@lru_cache(maxsize=256)
def _cached_indices(kind: str, height: int, width: int, num_directions: int) -> Tensor:
    on_map = scan_order(kind, height, width)
    # Transposed map (W, H): its cell (j, i) is cell (i, j) of the map.
    on_transposed = scan_order(kind, width, height)
    transposed = (on_transposed % height) * width + on_transposed // height
    # rot90 map (W, H): its cell (r, c) is cell (c, W-1-r) of the map.
    rotated = (on_transposed % height) * width + (width - 1 - on_transposed // height)
    # Transposed rot90 map (H, W): its cell (r, c) is cell (r, W-1-c) of the map.
    rotated_transposed = (on_map // width) * width + (width - 1 - on_map % width)
    forward = torch.stack([on_map, transposed, rotated, rotated_transposed])[: num_directions // 2]
    return torch.stack([forward, forward.flip(-1)], dim=1).reshape(num_directions, -1)


def gather_directions(x: Tensor, indices: Tensor) -> Tensor:
    """Sequences of a map along each direction: x (B, C, H, W), indices (K, L=H*W) -> (B, K, C, L)."""
    batch, channels = x.shape[:2]
    num_directions, length = indices.shape
    flat = x.flatten(2).index_select(2, indices.to(x.device).flatten())  # (B, C, K*L)
    return flat.view(batch, channels, num_directions, length).transpose(1, 2).contiguous()


def merge_directions(y: Tensor, indices: Tensor, height: int, width: int) -> Tensor:
    """Sum of K directional sequences put back on the grid: y (B, K, C, L) -> (B, C, H, W).

    Uses the inverse permutations (gathers only), so it is deterministic on every device.
    """
    batch, num_directions, channels, length = y.shape
    indices = indices.to(y.device)
    inverse = torch.argsort(indices, dim=1)  # (K, L): step at which direction k visits each cell
    offsets = torch.arange(num_directions, device=y.device)[:, None] * length
    flat = y.transpose(1, 2).reshape(batch, channels, num_directions * length)
    gathered = flat.index_select(2, (inverse + offsets).flatten())
    return gathered.view(batch, channels, num_directions, length).sum(2).view(batch, channels, height, width)

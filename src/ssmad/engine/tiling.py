"""Tiles: an image larger than the model should see at once, scored as an overlapping grid.

``--tile T --tile-overlap O``: the image, already brought to its class's geometry (H, W), is cut
into T x T tiles (a side shorter than T is one tile of that side) whose neighbours overlap by at
least O pixels; the first and last tiles of a row or column touch the image's borders and the
others are spread evenly between them. Every tile is scored on its own (maps blurred at the tile's
resolution, as a whole image is), and the maps are blended into one (H, W) map with weights that
fall off linearly toward each tile's borders over the overlap, so that no seam shows; the image
score is the maximum of that stitched map. Memory is bounded by the tile, not the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ssmad.data.geometry import SIDE_MULTIPLE
from ssmad.models.image_score import image_scores

MIN_TILE = 2 * SIDE_MULTIPLE  # a 32-pixel tile leaves the model's deepest map one cell


@dataclass(frozen=True)
class TileSettings:
    """``--tile`` and ``--tile-overlap`` of a run: images larger than ``size`` are scored in tiles."""

    size: int
    overlap: int = 0

    def __post_init__(self) -> None:
        TileGrid(self.size, self.size, self.size, self.overlap)  # the same checks as any grid

    def to_dict(self) -> dict[str, int]:
        return {"size": self.size, "overlap": self.overlap}

    @classmethod
    def from_dict(cls, values: dict[str, int] | None) -> TileSettings | None:
        """``None`` (no tiles) or the stored settings."""
        return None if values is None else cls(int(values["size"]), int(values.get("overlap", 0)))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels along a side of ``length``: the fewest tiles with
    neighbours overlapping by at least ``overlap``, spread evenly from 0 to ``length - tile``."""
    if length <= tile:
        return [0]
    count = 1 + -(-(length - tile) // (tile - overlap))  # ceil division
    span = length - tile
    return [round(i * span / (count - 1)) for i in range(count)]


def blend_window(size: int, overlap: int) -> np.ndarray:
    """Weights (size,) of one tile side: 1 inside, falling linearly to 1 / (overlap + 1) at the
    borders over ``overlap`` pixels; never 0, so a pixel covered by one tile keeps its value."""
    if overlap <= 0:
        return np.ones(size, np.float32)
    index = np.arange(size)
    distance = np.minimum(index, size - 1 - index) + 1
    return np.minimum(1.0, distance / (overlap + 1)).astype(np.float32)


@dataclass(frozen=True)
class TileGrid:
    """The tiles of an image of ``height`` x ``width`` pixels (tile ``tile``, overlap ``overlap``)."""

    height: int
    width: int
    tile: int
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.tile < MIN_TILE or self.tile % SIDE_MULTIPLE:
            raise ValueError(f"--tile {self.tile} cannot work: a multiple of {SIDE_MULTIPLE}, at least {MIN_TILE}")
        if not 0 <= self.overlap <= self.tile // 2:
            raise ValueError(f"--tile-overlap {self.overlap} must be in [0, tile / 2] (tile {self.tile})")

    @property
    def tile_hw(self) -> tuple[int, int]:
        return min(self.tile, self.height), min(self.tile, self.width)

    @property
    def boxes(self) -> list[tuple[int, int]]:
        """(top, left) of every tile, row by row."""
        tile_h, tile_w = self.tile_hw
        return [
            (top, left)
            for top in tile_starts(self.height, tile_h, self.overlap)
            for left in tile_starts(self.width, tile_w, self.overlap)
        ]

    def __len__(self) -> int:
        return len(self.boxes)

    def weights(self) -> np.ndarray:
        """Blending weights (tile_h, tile_w) of one tile, the outer product of two windows."""
        tile_h, tile_w = self.tile_hw
        return np.outer(blend_window(tile_h, self.overlap), blend_window(tile_w, self.overlap))

    def cut(self, image: torch.Tensor) -> torch.Tensor:
        """Image (C, H, W) -> tiles (n, C, tile_h, tile_w), in :attr:`boxes` order."""
        tile_h, tile_w = self.tile_hw
        return torch.stack([image[:, top:top + tile_h, left:left + tile_w] for top, left in self.boxes])

    def stitch(self, tile_maps: np.ndarray) -> np.ndarray:
        """Tile maps (n, tile_h, tile_w) -> the blended map (H, W): at every pixel the weighted mean
        of the tiles covering it."""
        total = np.zeros((self.height, self.width), np.float64)
        weight_sum = np.zeros_like(total)
        weights = self.weights()
        tile_h, tile_w = self.tile_hw
        for (top, left), tile_map in zip(self.boxes, tile_maps):
            total[top:top + tile_h, left:left + tile_w] += weights * tile_map
            weight_sum[top:top + tile_h, left:left + tile_w] += weights
        return (total / weight_sum).astype(np.float32)


def score_tiled(
    score: Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]],
    image: torch.Tensor,
    grid: TileGrid,
    batch_size: int,
    image_score: str,
) -> tuple[np.ndarray, float]:
    """One image (C, H, W) scored tile by tile: ``score`` maps a batch of tiles (b, C, th, tw) to
    maps (b, th, tw) and scores; returns the stitched map (H, W) and its image score by the rule
    ``image_score`` (``ssmad.models.image_score``)."""
    maps = [np.asarray(score(batch)[0], dtype=np.float32) for batch in grid.cut(image).split(batch_size)]
    stitched = grid.stitch(np.concatenate(maps))
    return stitched, float(image_scores(torch.from_numpy(stitched)[None], image_score)[0])

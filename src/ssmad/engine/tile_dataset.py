"""Training on tiles: the tiles of a dataset's images as the items the trainer caches and batches.

With ``--tile T``, an image brought to its class's geometry is cut into the same grid of T x T
tiles that scoring uses (``ssmad.engine.tiling.TileGrid``), and every tile is a training item of
its own: the decoder learns exactly the inputs it will see at inference, and each tile's
encoder features are cached like a whole image's. Every tile of every image is used every
epoch.

``--tile-crops random`` draws, instead, as many T x T crops per image and epoch as its grid has
tiles, each at a uniformly random position (drawn from the seed, the epoch and the item, so a
run and its resume draw the same). A random crop is a new encoder input each time, so its
features cannot be cached: every step pays for the encoder too. Which of the two trains the
better model is measured in docs/benchmarks.md ("Tiles: every grid tile or random crops").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from ssmad.data.dataset import AnomalyDataset
from ssmad.data.geometry import Geometry
from ssmad.engine.tiling import TileGrid, TileSettings

TILE_CROPS = ("grid", "random")  # --tile-crops: every tile of the scoring grid, or random crops


@dataclass(frozen=True)
class _Tile:
    index: int  # the image's index in the dataset
    top: int
    left: int
    geometry: Geometry  # the tile's size


class TileDataset(Dataset):
    """The tiles of ``dataset``'s images; ``tiles[i]`` is a dict like ``dataset[j]``'s, with the image
    (3, th, tw) and mask (1, th, tw) cut to tile ``i``. ``samples[i]`` is the tile's image's sample.

    With ``crops="random"`` item ``i`` is cut at a random position of its image instead of tile
    ``i``'s (the same size): the position depends on ``seed``, the epoch (:meth:`set_epoch`) and ``i``.
    """

    def __init__(self, dataset: AnomalyDataset, tile: TileSettings, crops: str = "grid", seed: int = 0):
        if crops not in TILE_CROPS:
            raise ValueError(f"unknown tile crops '{crops}': use one of {', '.join(TILE_CROPS)}")
        self.dataset = dataset
        self.tile = tile
        self.crops = crops
        self.seed = seed
        self.epoch = 0
        self.class_names = dataset.class_names
        self.geometries = dataset.geometries
        self.rois = dataset.rois
        self.tiles = []
        for index in range(len(dataset)):
            geometry = dataset.geometry(index)
            grid = TileGrid(geometry.height, geometry.width, tile.size, tile.overlap)
            size = Geometry(*grid.tile_hw)
            self.tiles.extend(_Tile(index, top, left, size) for top, left in grid.boxes)
        self.samples = [dataset.samples[t.index] for t in self.tiles]

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def labels(self) -> list[int]:
        return [sample.label for sample in self.samples]

    def geometry(self, index: int) -> Geometry:
        return self.tiles[index].geometry

    def geometry_groups(self, indices: list[int] | None = None) -> dict[Geometry, list[int]]:
        return AnomalyDataset.geometry_groups(self, indices)

    def geometry_batches(self, batch_size: int, indices: list[int] | None = None) -> list[list[int]]:
        return AnomalyDataset.geometry_batches(self, batch_size, indices)

    def subset(self, indices: list[int]) -> TileDataset:
        """The tiles at ``indices``."""
        part = TileDataset.__new__(TileDataset)
        part.__dict__.update(self.__dict__)
        part.tiles = [self.tiles[i] for i in indices]
        part.samples = [self.samples[i] for i in indices]
        return part

    def set_epoch(self, epoch: int) -> None:
        """Random crops of ``epoch`` from now on (grid tiles do not change)."""
        self.epoch = epoch

    def crop_position(self, index: int) -> tuple[int, int]:
        """(top, left) of item ``index`` in its image at the current epoch."""
        tile = self.tiles[index]
        if self.crops == "grid":
            return tile.top, tile.left
        image = self.dataset.geometry(tile.index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        top = int(rng.integers(0, image.height - tile.geometry.height + 1))
        left = int(rng.integers(0, image.width - tile.geometry.width + 1))
        return top, left

    def __getitem__(self, index: int) -> dict:
        tile = self.tiles[index]
        item = self.dataset[tile.index]
        top, left = self.crop_position(index)
        rows = slice(top, top + tile.geometry.height)
        cols = slice(left, left + tile.geometry.width)
        return {**item, "image": item["image"][:, rows, cols], "mask": item["mask"][:, rows, cols]}

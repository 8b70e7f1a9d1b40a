"""Tile grid and blending against a slow obvious reference."""

import numpy as np
import pytest
import torch

from ssmad.engine.tiling import TileGrid, blend_window, score_tiled, tile_starts


def reference_stitch(grid: TileGrid, tile_maps: np.ndarray) -> np.ndarray:
    """Pixel by pixel: the weighted mean of the tiles covering it, with the same windows."""
    tile_h, tile_w = grid.tile_hw
    wy = blend_window(tile_h, grid.overlap)
    wx = blend_window(tile_w, grid.overlap)
    out = np.zeros((grid.height, grid.width))
    for y in range(grid.height):
        for x in range(grid.width):
            num = den = 0.0
            for (top, left), tile_map in zip(grid.boxes, tile_maps):
                if top <= y < top + tile_h and left <= x < left + tile_w:
                    weight = wy[y - top] * wx[x - left]
                    num += weight * tile_map[y - top, x - left]
                    den += weight
            assert den > 0, f"pixel ({y}, {x}) is covered by no tile"
            out[y, x] = num / den
    return out


@pytest.mark.parametrize("length,tile,overlap", [(64, 64, 0), (100, 32, 8), (160, 64, 16), (257, 96, 32), (40, 64, 8)])
def test_tile_starts_cover_the_side_with_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))  # neighbours overlap >= overlap
    assert all(b > a for a, b in zip(starts, starts[1:]))
    if len(starts) > 2:  # the fewest tiles: one fewer could not keep the overlap
        assert (len(starts) - 2) * (size - overlap) + size < length


@pytest.mark.parametrize("height,width,tile,overlap", [(96, 160, 64, 16), (128, 128, 64, 0), (140, 100, 64, 24), (32, 200, 64, 32)])
def test_stitch_equals_the_pixelwise_reference(height, width, tile, overlap):
    grid = TileGrid(height, width, tile, overlap)
    rng = np.random.default_rng(0)
    tile_maps = rng.random((len(grid), *grid.tile_hw)).astype(np.float32)
    np.testing.assert_allclose(grid.stitch(tile_maps), reference_stitch(grid, tile_maps), rtol=1e-6, atol=1e-6)


def test_weights_sum_to_one_and_constant_maps_stay_constant():
    grid = TileGrid(130, 200, 64, 24)
    ones = np.ones((len(grid), *grid.tile_hw), np.float32)
    np.testing.assert_allclose(grid.stitch(ones), 1.0, rtol=1e-6)
    np.testing.assert_allclose(grid.stitch(3.5 * ones), 3.5, rtol=1e-6)


def test_each_tile_map_is_reproduced_where_tiles_do_not_overlap():
    grid = TileGrid(96, 192, 64, 0)
    assert grid.boxes == [(0, 0), (0, 64), (0, 128), (32, 0), (32, 64), (32, 128)]
    grid = TileGrid(64, 192, 64, 0)
    tile_maps = np.stack([np.full((64, 64), value, np.float32) for value in (1.0, 2.0, 3.0)])
    stitched = grid.stitch(tile_maps)
    for (top, left), value in zip(grid.boxes, (1.0, 2.0, 3.0)):
        np.testing.assert_array_equal(stitched[top:top + 64, left:left + 64], value)
    overlapping = TileGrid(64, 160, 64, 16)
    maps = np.random.default_rng(1).random((len(overlapping), 64, 64)).astype(np.float32)
    stitched = overlapping.stitch(maps)
    (_, l0), (_, l1) = overlapping.boxes[:2]
    alone = slice(0, l1)  # columns only the first tile covers
    np.testing.assert_allclose(stitched[:, alone], maps[0][:, alone], rtol=1e-6)


def test_score_tiled_runs_the_scorer_per_tile_in_batches():
    grid = TileGrid(96, 160, 64, 16)
    image = torch.arange(3 * 96 * 160, dtype=torch.float32).view(3, 96, 160)
    seen = []

    def score(batch):
        seen.append(len(batch))
        return batch[:, 0].numpy(), batch[:, 0].flatten(1).amax(1).numpy()

    stitched, top = score_tiled(score, image, grid, batch_size=4, image_score="max")
    assert sum(seen) == len(grid) and max(seen) <= 4
    np.testing.assert_allclose(stitched, image[0].numpy(), rtol=1e-6)  # tiles of one map blend back to it
    assert top == pytest.approx(float(image[0].max()))
    _, top_mean = score_tiled(score, image, grid, batch_size=4, image_score="top_mean:0.01")
    count = round(0.01 * 96 * 160)
    assert top_mean == pytest.approx(float(np.sort(image[0].numpy().ravel())[-count:].mean()), rel=1e-6)


@pytest.mark.parametrize("tile,overlap,message", [(48, 0, "multiple of 32"), (32, 0, "at least 64"), (64, 40, "tile-overlap")])
def test_bad_tiles_are_refused(tile, overlap, message):
    with pytest.raises(ValueError, match=message):
        TileGrid(256, 256, tile, overlap)

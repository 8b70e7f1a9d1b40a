"""Scan orders of any grid size, and the directional gather/merge helpers."""

import pytest
import torch

from ssmad.ops import SCAN_ORDERS, direction_indices, gather_directions, merge_directions, scan_order

SIZES = [(1, 1), (1, 7), (7, 1), (5, 7), (16, 16), (64, 48), (6, 9)]


@pytest.mark.parametrize("kind", SCAN_ORDERS)
@pytest.mark.parametrize("size", SIZES)
def test_every_order_is_a_permutation(kind, size):
    order = scan_order(kind, *size)
    assert order.dtype == torch.long
    assert torch.equal(order.sort().values, torch.arange(size[0] * size[1]))


def steps(order, width):
    """Row and column moves between consecutive cells: (L-1,), (L-1,)."""
    return (order // width).diff().abs(), (order % width).diff().abs()


@pytest.mark.parametrize("size", [(1, 7), (2, 5), (5, 7), (7, 5), (16, 16), (64, 48), (3, 10), (9, 9)])
def test_hilbert_steps_to_a_neighbour(size):
    dr, dc = steps(scan_order("hilbert", *size), size[1])
    assert torch.all(dr + dc == 1)


@pytest.mark.parametrize("size", [(4, 5), (6, 7), (9, 8)])
def test_hilbert_one_diagonal_step_on_odd_by_even_grids(size):
    dr, dc = steps(scan_order("hilbert", *size), size[1])
    assert torch.all(torch.maximum(dr, dc) == 1)
    assert int((dr + dc == 2).sum()) == 1


def test_small_orders_by_hand():
    assert scan_order("scan", 2, 3).tolist() == [0, 1, 2, 5, 4, 3]
    assert scan_order("zigzag", 3, 3).tolist() == [0, 1, 3, 6, 4, 2, 5, 7, 8]
    assert scan_order("zorder", 2, 4).tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
    assert scan_order("hilbert", 2, 2).tolist() == [0, 2, 3, 1]
    assert scan_order("hilbert", 4, 4).tolist() == [0, 1, 5, 4, 8, 12, 13, 9, 10, 14, 15, 11, 7, 6, 2, 3]


def test_zorder_is_local():
    # Every aligned 4x4 block of a 16x16 grid is visited as 16 consecutive steps.
    order = scan_order("zorder", 16, 16)
    blocks = (order // 16 // 4) * 4 + (order % 16) // 4
    assert torch.all(blocks.view(16, 16) == blocks.view(16, 16)[:, :1])
    # Out-of-range codes are skipped, not visited: a 5x7 order keeps Morton order of the 8x8 grid.
    full = scan_order("zorder", 8, 8)
    kept = full[(full // 8 < 5) & (full % 8 < 7)]
    assert torch.equal(scan_order("zorder", 5, 7), (kept // 8) * 7 + kept % 8)


def test_unknown_order_and_bad_size():
    with pytest.raises(ValueError, match="unknown scan order 'spiral'"):
        scan_order("spiral", 4, 4)
    with pytest.raises(ValueError, match="height, width >= 1"):
        scan_order("sweep", 0, 4)
    with pytest.raises(ValueError, match="num_directions"):
        direction_indices("sweep", 4, 4, 3)


def test_directions_follow_transpose_and_rot90():
    x = torch.randn(2, 3, 5, 7)
    seq = gather_directions(x, direction_indices("sweep", 5, 7, 8))  # (B, K, C, L)
    rotated = torch.rot90(x, 1, dims=(2, 3))
    expected = [
        x.flatten(2),
        x.transpose(2, 3).flatten(2),
        rotated.flatten(2),
        rotated.transpose(2, 3).flatten(2),
    ]
    for k, sequence in enumerate(expected):
        assert torch.equal(seq[:, 2 * k], sequence)
        assert torch.equal(seq[:, 2 * k + 1], sequence.flip(-1))


@pytest.mark.parametrize("kind", SCAN_ORDERS)
@pytest.mark.parametrize("num_directions", [2, 4, 8])
def test_gather_then_merge_is_k_times_the_map(kind, num_directions):
    x = torch.randn(2, 3, 6, 9)
    indices = direction_indices(kind, 6, 9, num_directions)
    assert indices.shape == (num_directions, 54)
    seq = gather_directions(x, indices)
    assert seq.shape == (2, num_directions, 3, 54)
    assert torch.allclose(merge_directions(seq, indices, 6, 9), num_directions * x, atol=1e-6)

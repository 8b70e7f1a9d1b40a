"""Pyramidal scanning: levels are real, sub-regions are independent, the batched level equals
scanning each crop on its own, and the merges follow their definitions."""

import math

import pytest
import torch

from ssmad.modules.pyramid import pyramid_scan, scan_regions
from ssmad.modules.ss2d import SS2D
from ssmad.ops.routes import level_weights, split_segments


def crops(size: int, parts: int) -> list[tuple[int, int]]:
    """(start, stop) of each near-equal segment, written out plainly."""
    parts = min(parts, size)
    bounds = [round(i * size / parts) for i in range(parts + 1)]
    lengths = sorted((bounds[i + 1] - bounds[i] for i in range(parts)), reverse=True)
    starts = [sum(lengths[:i]) for i in range(parts)]
    return [(s, s + n) for s, n in zip(starts, lengths)]


def regions_one_by_one(x, scan_fn, parts):
    """Slow reference of scan_regions: a Python loop over the crops."""
    out = torch.zeros_like(x)
    for h0, h1 in crops(x.shape[2], parts):
        for w0, w1 in crops(x.shape[3], parts):
            out[:, :, h0:h1, w0:w1] = scan_fn(x[:, :, h0:h1, w0:w1])
    return out


@pytest.fixture
def ss2d():
    torch.manual_seed(0)
    layer = SS2D(4, scan_order="hilbert", num_directions=4)
    with torch.no_grad():  # long memory (decay ~0.93 per step) so that every level matters
        layer.A_logs.fill_(math.log(0.1))
        layer.dt_projs_bias.zero_()
    return layer


def test_split_segments_hand_cases():
    assert split_segments(8, 4) == [(0, 4, 2)]
    assert split_segments(10, 4) == [(0, 2, 3), (6, 2, 2)]  # 3 3 2 2
    assert split_segments(3, 4) == [(0, 3, 1)]  # shorter than the parts: single pixels


@pytest.mark.parametrize("shape,parts", [((8, 8), 2), ((8, 12), 4), ((10, 7), 4), ((5, 6), 2), ((3, 9), 4)])
def test_batched_level_equals_scanning_each_crop(ss2d, shape, parts):
    x = torch.randn(2, ss2d.d_inner, *shape)
    calls = []

    def counting_scan(regions):
        calls.append(regions.shape)
        return ss2d.scan_core(regions)

    batched = scan_regions(x, counting_scan, parts)
    torch.testing.assert_close(batched, regions_one_by_one(x, ss2d.scan_core, parts))
    assert len(calls) <= 4  # one call per distinct sub-region size, not per sub-region


def test_level_one_quadrants_are_independent(ss2d):
    x = torch.randn(1, ss2d.d_inner, 8, 8)
    changed = x.clone()
    changed[:, :, :4, 4:] += torch.randn(1, ss2d.d_inner, 4, 4)  # top-right quadrant
    before, after = scan_regions(x, ss2d.scan_core, 2), scan_regions(changed, ss2d.scan_core, 2)
    for rows, cols in [(slice(0, 4), slice(0, 4)), (slice(4, 8), slice(0, 4)), (slice(4, 8), slice(4, 8))]:
        torch.testing.assert_close(after[:, :, rows, cols], before[:, :, rows, cols], rtol=0, atol=0)
    assert not torch.allclose(after[:, :, :4, 4:], before[:, :, :4, 4:])
    # the whole-map level (0) mixes everything: other quadrants change there
    assert not torch.allclose(ss2d.scan_core(changed)[:, :, 4:, :4], ss2d.scan_core(x)[:, :, 4:, :4])


def test_levels_give_different_outputs_with_the_same_weights(ss2d):
    x = torch.randn(1, 8, 8, 4)
    outputs = []
    for levels in (0, 1, 2):
        ss2d.pyramid_levels = levels
        outputs.append(ss2d(x))
    for i in range(3):
        for j in range(i + 1, 3):
            assert (outputs[i] - outputs[j]).abs().max() > 1e-2 * outputs[i].abs().max()


def test_mean_merge_is_the_equal_average_of_levels(ss2d):
    x = torch.randn(1, ss2d.d_inner, 12, 10)
    levels = [ss2d.scan_core(x)] + [regions_one_by_one(x, ss2d.scan_core, 2**p) for p in (1, 2)]
    torch.testing.assert_close(pyramid_scan(x, ss2d.scan_core, 2, "mean"), sum(levels) / 3)


def nested_reference(x, scan_fn, depth_left):
    """The paper's recursion on actual crops: O(region) = (S(region) + cat O(quadrants)) / 2."""
    if depth_left == 0:
        return scan_fn(x)
    children = torch.zeros_like(x)
    for h0, h1 in crops(x.shape[2], 2):
        for w0, w1 in crops(x.shape[3], 2):
            children[:, :, h0:h1, w0:w1] = nested_reference(x[:, :, h0:h1, w0:w1], scan_fn, depth_left - 1)
    return (scan_fn(x) + children) / 2


def test_nested_merge_is_the_papers_recursive_average(ss2d):
    assert level_weights(2, "nested") == [0.5, 0.25, 0.25]
    x = torch.randn(2, ss2d.d_inner, 8, 8)
    torch.testing.assert_close(pyramid_scan(x, ss2d.scan_core, 2, "nested"), nested_reference(x, ss2d.scan_core, 2))

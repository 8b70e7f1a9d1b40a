"""Pyramidal scanning: levels are real, sub-regions are independent, SS2D's routed scan equals
scanning each crop on its own, and the merges follow their definitions."""

import math

import pytest
import torch

from ss2d_reference import crops, directions_reference, pyramid_reference, regions_reference
from ssmad.modules.ss2d import SS2D
from ssmad.ops import pyramid_routes, routed_selective_scan
from ssmad.ops.routes import Routes, level_weights, split_segments


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
    assert crops(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("shape,levels", [((8, 8), 1), ((8, 12), 2), ((10, 7), 2), ((5, 6), 1), ((3, 9), 2)])
def test_routed_scan_equals_scanning_each_crop(monkeypatch, ss2d, backend, shape, levels):
    monkeypatch.setenv("SSMAD_SCAN_BACKEND", backend)
    ss2d.pyramid_levels = levels
    x = torch.randn(2, ss2d.d_inner, *shape)
    with torch.no_grad():
        torch.testing.assert_close(ss2d.routed_scan(x), pyramid_reference(ss2d, x), rtol=1e-4, atol=1e-5)


def test_level_one_quadrants_are_independent(ss2d):
    """The level-1 routes alone: a change inside one quadrant stays inside it."""
    routes = pyramid_routes("hilbert", 8, 8, 4, 1)
    level_one = Routes(routes.index[:, 1:], routes.starts[:, 1:], torch.ones(4, 1))
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(1, 3, 64, generator=gen)
    delta = torch.rand(1, 4, 3, 64, generator=gen)
    B, C = torch.randn(1, 4, 5, 64, generator=gen), torch.randn(1, 4, 5, 64, generator=gen)
    A, D, bias = -torch.rand(4, 3, 5, generator=gen) * 0.1, torch.zeros(4, 3), torch.zeros(4, 3)
    changed = u.clone().view(1, 3, 8, 8)
    changed[:, :, :4, 4:] += 1.0  # top-right quadrant
    before = routed_selective_scan(u, delta, A, B, C, D, bias, level_one).view(1, 3, 8, 8)
    after = routed_selective_scan(changed.flatten(2), delta, A, B, C, D, bias, level_one).view(1, 3, 8, 8)
    for rows, cols in [(slice(0, 4), slice(0, 4)), (slice(4, 8), slice(0, 4)), (slice(4, 8), slice(4, 8))]:
        torch.testing.assert_close(after[:, :, rows, cols], before[:, :, rows, cols], rtol=0, atol=0)
    assert not torch.allclose(after[:, :, :4, 4:], before[:, :, :4, 4:])
    # the whole-map level (0) mixes everything: other quadrants change there
    level_zero = Routes(routes.index[:, :1], routes.starts[:, :1], torch.ones(4, 1))
    whole = [routed_selective_scan(v, delta, A, B, C, D, bias, level_zero).view(1, 3, 8, 8) for v in (u, changed.flatten(2))]
    assert not torch.allclose(whole[0][:, :, 4:, :4], whole[1][:, :, 4:, :4])


def test_levels_give_different_outputs_with_the_same_weights(ss2d):
    x = torch.randn(1, 8, 8, 4)
    outputs = []
    for levels in (0, 1, 2):
        ss2d.pyramid_levels = levels
        with torch.no_grad():
            outputs.append(ss2d(x))
    for i in range(3):
        for j in range(i + 1, 3):
            assert (outputs[i] - outputs[j]).abs().max() > 1e-2 * outputs[i].abs().max()


def test_mean_merge_is_the_equal_average_of_levels(ss2d):
    ss2d.pyramid_levels, ss2d.pyramid_merge = 2, "mean"
    x = torch.randn(1, ss2d.d_inner, 12, 10)
    levels = [directions_reference(ss2d, x)] + [regions_reference(ss2d, x, 2**p) for p in (1, 2)]
    with torch.no_grad():
        torch.testing.assert_close(ss2d.routed_scan(x), sum(levels) / 3, rtol=1e-4, atol=1e-5)


def nested_reference(ss2d, x, depth_left):
    """The paper's recursion on actual crops: O(region) = (S(region) + cat O(quadrants)) / 2."""
    if depth_left == 0:
        return directions_reference(ss2d, x)
    children = torch.zeros_like(x)
    for h0, h1 in crops(x.shape[2], 2):
        for w0, w1 in crops(x.shape[3], 2):
            children[:, :, h0:h1, w0:w1] = nested_reference(ss2d, x[:, :, h0:h1, w0:w1], depth_left - 1)
    return (directions_reference(ss2d, x) + children) / 2


def test_nested_merge_is_the_papers_recursive_average(ss2d):
    assert level_weights(2, "nested") == [0.5, 0.25, 0.25]
    ss2d.pyramid_levels, ss2d.pyramid_merge = 2, "nested"
    x = torch.randn(2, ss2d.d_inner, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ss2d.routed_scan(x), nested_reference(ss2d, x, 2), rtol=1e-4, atol=1e-5)

"""Routes and the routed scan: the routes of a pyramid are what the pyramid scans, the numba
kernel and the PyTorch routed scan agree with the sequential reference (restarts, weights, every
gradient), and SS2D's routed scan computes what scanning each direction, crop and level on its
own computes, values and gradients."""

import math

import pytest
import torch

from ss2d_reference import pyramid_reference
from ssmad.modules.ss2d import SS2D
from ssmad.ops import (
    available_backends,
    direction_indices,
    identity_routes,
    pyramid_routes,
    routed_scan_ref,
    routed_selective_scan,
    split_segments,
)
from ssmad.ops.routes import Routes, sub_regions

NUMBA = "numba" in available_backends("cpu")
needs_numba = pytest.mark.skipif(not NUMBA, reason="numba not installed")


def relative_error(actual, expected):
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("kind,height,width,directions,levels", [
    ("sweep", 8, 8, 4, 2), ("hilbert", 10, 7, 8, 2), ("zigzag", 5, 6, 2, 1), ("scan", 3, 9, 4, 2),
])
def test_every_route_visits_each_position_once_and_restarts_per_sub_region(kind, height, width, directions, levels):
    routes = pyramid_routes(kind, height, width, directions, levels)
    assert routes.shape == (directions, levels + 1, height * width)
    for g in range(directions):
        for p in range(levels + 1):
            assert torch.equal(routes.index[g, p].sort().values, torch.arange(height * width))
            assert int(routes.starts[g, p].sum()) == len(sub_regions(height, width, 2**p))
        assert torch.equal(routes.index[g, 0], direction_indices(kind, height, width, directions)[g])
    torch.testing.assert_close(routes.weight.sum(1), torch.ones(directions))


def test_a_level_one_route_stays_inside_each_quadrant_until_it_restarts():
    routes = pyramid_routes("sweep", 4, 6, 2, 1)
    # direction 0 (raster order in each 2x3 quadrant), quadrants row by row
    expected = [0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11, 12, 13, 14, 18, 19, 20, 15, 16, 17, 21, 22, 23]
    assert routes.index[0, 1].tolist() == expected
    assert routes.starts[0, 1].nonzero().flatten().tolist() == [0, 6, 12, 18]
    assert sub_regions(4, 6, 2) == [(0, 0, 2, 3), (0, 3, 2, 3), (2, 0, 2, 3), (2, 3, 2, 3)]
    assert split_segments(6, 2) == [(0, 2, 3)]


def random_routes(groups, per_group, length, seed):
    """Random permutations with restarts at random steps and random weights."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.stack([torch.randperm(length, generator=gen) for _ in range(per_group)]) for _ in range(groups)])
    starts = torch.rand(groups, per_group, length, generator=gen) < 0.1
    starts[..., 0] = True
    return Routes(index, starts, torch.rand(groups, per_group, generator=gen))


def routed_inputs(batch, groups, dim, state, length, shared_u, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(batch, 1 if shared_u else groups, dim, length, generator=gen),
        "dt": torch.rand(batch, groups, dim, length, generator=gen) * 0.5,
        "A": -torch.rand(groups, dim, state, generator=gen) * 3 - 0.1,
        "B": torch.randn(batch, groups, state, length, generator=gen),
        "C": torch.randn(batch, groups, state, length, generator=gen),
    }


def routed_and_grads(fn, inputs, routes):
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    y = fn(**leaves, routes=routes)
    y = y[0] if isinstance(y, tuple) else y
    (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)).sum().backward()
    return y, {k: v.grad for k, v in leaves.items()}


def routed_kernel(backend):
    from ssmad.ops.routed_scan import routed_kernel as kernel

    return kernel(backend)


@pytest.mark.parametrize("backend", ["torch", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("shared_u", [True, False])
@pytest.mark.parametrize("groups,state,length", [(2, 16, 150), (4, 5, 37), (3, 16, 40)])
def test_routed_kernels_match_the_sequential_reference(backend, shared_u, groups, state, length):
    """Random routes (permutations, restarts at random steps, weights in (0, 1)) against the float64
    reference: values <= 1e-5, every gradient <= 1e-4 relative."""
    routes = random_routes(groups=groups, per_group=2, length=length, seed=2)
    inputs = routed_inputs(batch=2, groups=groups, dim=4, state=state, length=length, shared_u=shared_u)
    y_ref, grads_ref = routed_and_grads(routed_scan_ref, {k: v.double() for k, v in inputs.items()}, routes)
    y, grads = routed_and_grads(routed_kernel(backend), inputs, routes)
    assert y.dtype == torch.float32
    assert relative_error(y, y_ref) <= 1e-5
    for name, grad in grads.items():
        assert grad.shape == inputs[name].shape
        assert relative_error(grad, grads_ref[name]) <= 1e-4, name


def test_reference_restart_forgets_the_past():
    """A restart at step t: the outputs from t on do not depend on inputs before t."""
    routes = Routes(torch.arange(10).view(1, 1, 10), torch.tensor([[[1, 0, 0, 0, 0, 1, 0, 0, 0, 0]]], dtype=torch.bool), torch.ones(1, 1))
    inputs = routed_inputs(batch=1, groups=1, dim=2, state=3, length=10, shared_u=True)
    changed = {**inputs, "u": inputs["u"].clone()}
    changed["u"][..., :5] += 1.0
    before, after = routed_scan_ref(**inputs, routes=routes), routed_scan_ref(**changed, routes=routes)
    torch.testing.assert_close(after[..., 5:], before[..., 5:], rtol=0, atol=0)
    assert not torch.allclose(after[..., :5], before[..., :5])


def test_identity_routes_are_the_plain_scan():
    from ssmad.ops import selective_scan_ref

    inputs = routed_inputs(batch=2, groups=2, dim=3, state=4, length=20, shared_u=False)
    y = routed_scan_ref(**inputs, routes=identity_routes(2, 20))
    plain = selective_scan_ref(
        inputs["u"].flatten(1, 2), inputs["dt"].flatten(1, 2), inputs["A"].flatten(0, 1), inputs["B"], inputs["C"]
    )
    torch.testing.assert_close(y.flatten(1, 2), plain)


def ss2d_layer(order, directions, levels, merge):
    torch.manual_seed(0)
    layer = SS2D(6, scan_order=order, num_directions=directions, pyramid_levels=levels, pyramid_merge=merge)
    with torch.no_grad():  # long memory and non-trivial skip so that every term matters
        layer.A_logs.fill_(math.log(0.1)).add_(0.3 * torch.randn_like(layer.A_logs))
        layer.Ds.add_(torch.randn_like(layer.Ds))
    return layer


@pytest.mark.parametrize("backend", ["reference", "torch", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("order,directions,levels,merge,height,width", [
    ("sweep", 4, 2, "mean", 12, 10), ("hilbert", 8, 0, "mean", 6, 6), ("zigzag", 2, 1, "nested", 7, 9),
])
def test_ss2d_routed_scan_equals_the_per_crop_reference(monkeypatch, backend, order, directions, levels, merge, height, width):
    if backend == "reference" and height * width > 64:
        height, width = 8, 6  # the Python loop is slow
    layer = ss2d_layer(order, directions, levels, merge)
    x = torch.randn(2, layer.d_inner, height, width, requires_grad=True)
    weights = torch.randn(2, layer.d_inner, height, width)
    results = []
    for path in ("routed", "reference"):
        layer.zero_grad()
        x.grad = None
        if path == "routed":
            monkeypatch.setenv("SSMAD_SCAN_BACKEND", backend)
            y = layer.routed_scan(x)
        else:
            y = pyramid_reference(layer, x)
        (y * weights).sum().backward()
        results.append((y.detach(), x.grad.clone(), {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}))
    (y_routed, gx_routed, grads_routed), (y_ref, gx_ref, grads_ref) = results
    # both in float32, summing in different orders: the selective-scan tests' tolerances
    assert relative_error(y_routed, y_ref) <= 1e-4
    assert relative_error(gx_routed, gx_ref) <= 1e-4
    assert grads_routed.keys() == grads_ref.keys()
    for name, grad in grads_ref.items():
        assert relative_error(grads_routed[name], grad) <= 1e-3, name


@pytest.mark.parametrize("backend", ["torch", pytest.param("numba", marks=needs_numba)])
def test_ss2d_runs_the_backend_ops_chooses(monkeypatch, backend):
    from ssmad.ops import routed_scan as routed

    layer = ss2d_layer("sweep", 4, 1, "mean")
    chosen = []
    original = routed.routed_kernel
    monkeypatch.setattr(routed, "routed_kernel", lambda name: chosen.append(name) or original(name))
    monkeypatch.setenv("SSMAD_SCAN_BACKEND", backend)
    with torch.no_grad():
        layer(torch.randn(1, 4, 6, 6))
    assert chosen == [backend]


def test_routed_scan_refuses_a_backend_without_routes():
    inputs = routed_inputs(batch=1, groups=2, dim=3, state=4, length=6, shared_u=True)
    with pytest.raises(ValueError, match="no routed scan"):
        routed_selective_scan(
            inputs["u"][:, 0], inputs["dt"], inputs["A"], inputs["B"], inputs["C"], torch.ones(2, 3), torch.zeros(2, 3),
            identity_routes(2, 6), backend="mamba_ssm",
        )


@pytest.mark.parametrize("backend", ["reference", "torch", pytest.param("numba", marks=needs_numba)])
def test_skip_term_counts_every_route_with_its_weight(backend):
    """With C = 0 the scans add nothing: out = u * sum_g D_g * (sum of group g's route weights)."""
    routes = random_routes(groups=2, per_group=3, length=12, seed=4)
    inputs = routed_inputs(batch=2, groups=2, dim=3, state=4, length=12, shared_u=True)
    D = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.25]])
    out = routed_selective_scan(
        inputs["u"][:, 0], inputs["dt"], inputs["A"], inputs["B"], torch.zeros_like(inputs["C"]), D,
        torch.zeros(2, 3), routes, backend=backend,
    )
    w = routes.weight.sum(1)  # (G,)
    expected = inputs["u"][:, 0] * (D[0] * w[0] + D[1] * w[1])[:, None]
    torch.testing.assert_close(out, expected)

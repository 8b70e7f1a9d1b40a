"""The block-loop routed scan (the backend of exported graphs) against the sequential reference:
random routes with restarts and weights, lengths that are not a multiple of the block, and the
pyramid routes of both scan-order families."""

import pytest
import torch
import torch.nn.functional as F

from ssmad.ops import pyramid_routes, routed_scan_ref, routed_selective_scan
from ssmad.ops.scan_loop import BLOCK
from test_ops_routes import random_routes, relative_error, routed_inputs


def reference(inputs, D, bias, routes):
    """The routed scan in float64, one step after the other."""
    x = {k: v.double() for k, v in inputs.items()}
    dt = F.softplus(x["dt"] + bias.double()[..., None])
    y = routed_scan_ref(x["u"], dt, x["A"], x["B"], x["C"], routes).sum(1)
    skip = (D.double() * routes.weight.double().sum(1, keepdim=True)).sum(0)
    return y + x["u"][:, 0] * skip[:, None]


@pytest.mark.parametrize("length", [BLOCK - 5, 3 * BLOCK + 7])
def test_loop_backend_matches_the_reference_on_random_routes(length):
    routes = random_routes(groups=3, per_group=2, length=length, seed=5)
    inputs = routed_inputs(batch=2, groups=3, dim=4, state=5, length=length, shared_u=True, seed=1)
    D, bias = torch.randn(3, 4), torch.randn(3, 4) * 0.5
    out = routed_selective_scan(
        inputs["u"][:, 0], inputs["dt"], inputs["A"], inputs["B"], inputs["C"], D, bias, routes, backend="loop"
    )
    assert out.shape == (2, 4, length)
    assert relative_error(out, reference(inputs, D, bias, routes)) <= 1e-5


@pytest.mark.parametrize("kind,directions,levels", [("sweep", 4, 2), ("hilbert", 8, 0), ("sweep", 2, 1)])
def test_loop_backend_matches_the_reference_on_pyramid_routes(kind, directions, levels):
    routes = pyramid_routes(kind, 6, 5, directions, levels)
    inputs = routed_inputs(batch=1, groups=directions, dim=3, state=4, length=30, shared_u=True, seed=2)
    D, bias = torch.randn(directions, 3), torch.zeros(directions, 3)
    out = routed_selective_scan(
        inputs["u"][:, 0], inputs["dt"], inputs["A"], inputs["B"], inputs["C"], D, bias, routes, backend="loop"
    )
    assert relative_error(out, reference(inputs, D, bias, routes)) <= 1e-5

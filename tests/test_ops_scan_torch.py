"""The PyTorch routed scan (every device without a kernel): its chunked scan against the
sequential reference across block and chunk boundaries and restarts, in float64 to rounding, its
final states, gradcheck, the operations it makes (T + NB per chunk, not one per step), and the
numba kernel's semantics for bias, softplus, skip and the sum over groups."""

import pytest
import torch
import torch.nn.functional as F

from ssmad.ops import routed_scan_ref, selective_scan_ref
from ssmad.ops import scan_torch
from ssmad.ops.routes import Routes, identity_routes
from ssmad.ops.scan_torch import routed_scan_torch
from test_ops_routes import NUMBA, random_routes, relative_error, routed_and_grads, routed_inputs


@pytest.fixture(params=[1, 2000, 10**9], ids=["step-chunks", "small-chunks", "one-chunk"])
def short_blocks(request, monkeypatch):
    """Chunks of one step, of a few blocks of a few steps, or the whole sequence in one chunk."""
    monkeypatch.setitem(scan_torch.CHUNK_ELEMENTS, "cpu", request.param)


@pytest.mark.parametrize("length", [3, 37, 64])
def test_blocks_equal_the_sequential_reference_in_float64(short_blocks, length):
    routes = random_routes(groups=2, per_group=3, length=length, seed=length)
    inputs = {k: v.double() for k, v in routed_inputs(batch=2, groups=2, dim=3, state=5, length=length, shared_u=False).items()}
    y_ref, grads_ref = routed_and_grads(routed_scan_ref, inputs, routes)
    y, grads = routed_and_grads(routed_scan_torch, inputs, routes)
    assert y.dtype == torch.float64
    assert relative_error(y, y_ref) <= 1e-12
    for name, grad in grads.items():
        assert relative_error(grad, grads_ref[name]) <= 1e-11, name


def test_a_restart_on_a_block_boundary_and_inside_a_block(short_blocks):
    """Restarts at step 4 (a boundary), 6 and 7 (inside one block, back to back)."""
    starts = torch.zeros(1, 1, 12, dtype=torch.bool)
    starts[..., [0, 4, 6, 7]] = True
    routes = Routes(torch.arange(12).flip(0).view(1, 1, 12), starts, torch.full((1, 1), 0.5))
    inputs = {k: v.double() for k, v in routed_inputs(batch=1, groups=1, dim=2, state=3, length=12, shared_u=True).items()}
    torch.testing.assert_close(routed_scan_torch(**inputs, routes=routes)[0], routed_scan_ref(**inputs, routes=routes))


@pytest.mark.parametrize("elements,expected", [(10**9, [(6, 7)]), (2000, [(5, 6), (2, 6)])])
def test_T_plus_NB_operations_per_chunk(monkeypatch, elements, expected):
    """L = 37: one chunk of 6 blocks of 7 steps (7 + 6 sequential operations, not 37), or, with
    chunks of about 2000 // 72 = 27 steps, blocks of 6 steps in chunks of 5 blocks."""
    monkeypatch.setitem(scan_torch.CHUNK_ELEMENTS, "cpu", elements)
    calls = []
    chunk_scan = scan_torch._chunk_scan
    monkeypatch.setattr(scan_torch, "_chunk_scan", lambda dt, *args: calls.append(tuple(dt.shape[:2])) or chunk_scan(dt, *args))
    inputs = routed_inputs(batch=1, groups=2, dim=3, state=4, length=37, shared_u=True)  # 2 x 3 x 3 x 4 = 72 per step
    with torch.no_grad():
        routed_scan_torch(**inputs, routes=random_routes(groups=2, per_group=3, length=37, seed=0))
    assert calls == expected


def test_final_states_are_the_plain_scans_last_state():
    inputs = routed_inputs(batch=2, groups=2, dim=3, state=4, length=30, shared_u=False, seed=3)
    _, last = routed_scan_torch(**inputs, routes=identity_routes(2, 30))
    _, expected = selective_scan_ref(
        inputs["u"].flatten(1, 2), inputs["dt"].flatten(1, 2), inputs["A"].flatten(0, 1), inputs["B"], inputs["C"],
        return_last_state=True,
    )
    assert last.shape == (2, 2, 3, 1, 4)
    torch.testing.assert_close(last.flatten(1, 2)[:, :, 0], expected)


def test_gradcheck_with_bias_softplus_and_skip():
    gen = torch.Generator().manual_seed(0)
    routes = random_routes(groups=2, per_group=2, length=9, seed=1)
    inputs = {k: v.double() for k, v in routed_inputs(batch=1, groups=2, dim=2, state=3, length=9, shared_u=True).items()}
    D, bias = torch.randn(2, 2, generator=gen).double(), torch.randn(2, 2, generator=gen).double()
    leaves = tuple(t.requires_grad_() for t in (*inputs.values(), D, bias))

    def scan(u, dt, A, B, C, D, bias):
        return routed_scan_torch(u, dt, A, B, C, routes, D, bias, softplus=True, sum_groups=True)[0]

    assert torch.autograd.gradcheck(scan, leaves)


@pytest.mark.skipif(not NUMBA, reason="numba not installed")
@pytest.mark.parametrize("sum_groups", [True, False])
def test_same_results_as_the_numba_kernel(sum_groups):
    from ssmad.ops.scan_numba import routed_scan_numba

    routes = random_routes(groups=4, per_group=3, length=41, seed=7)
    inputs = routed_inputs(batch=2, groups=4, dim=20, state=16, length=41, shared_u=True, seed=4)
    extra = dict(D=torch.randn(4, 20), delta_bias=torch.randn(4, 20) * 0.5, softplus=True, sum_groups=sum_groups)
    y, last = routed_scan_torch(**inputs, routes=routes, **extra)
    y_numba, last_numba = routed_scan_numba(**inputs, routes=routes, **extra)
    assert y.shape == y_numba.shape and last.shape == last_numba.shape
    assert relative_error(y, y_numba) <= 1e-5
    assert relative_error(last, last_numba) <= 1e-5
    dt = F.softplus(inputs["dt"] + extra["delta_bias"][..., None])
    assert relative_error(y.sum(1), (routed_scan_ref(inputs["u"], dt, inputs["A"], inputs["B"], inputs["C"], routes)
                                     + inputs["u"] * (extra["D"] * routes.weight.sum(1, keepdim=True))[..., None]).sum(1)) <= 1e-5

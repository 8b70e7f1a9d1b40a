"""The Triton routed scan (``ssmad.ops.scan_triton``) computes the sequential reference's values,
gradients and final states (restarts, route weights, 1 to 8 groups, odd lengths and lengths past a
chunk, padded states, channel tails, pyramid routes read in SS2D's strided layouts, bf16 and fp16
inputs), agrees with the numba kernel, and is deterministic.

Without a CUDA GPU the kernels run on CPU tensors in Triton's interpreter: TRITON_INTERPRET is set
here before triton and the kernel module are imported, since ``triton.jit`` reads it when it
decorates a function (triton.language's own when triton is imported).
The interpreter runs every operation in Python, hence the small shapes."""

import os

import pytest
import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
pytest.importorskip("triton")

from ssmad.ops import pyramid_routes, routed_scan_ref, scan_triton  # noqa: E402
from test_ops_routes import random_routes, relative_error, routed_inputs  # noqa: E402

if not CUDA and not scan_triton.INTERPRETED:
    pytest.skip("no CUDA GPU, and triton was imported without TRITON_INTERPRET=1", allow_module_level=True)
routed_scan_triton = scan_triton.routed_scan_triton


@pytest.fixture(params=["cuda" if CUDA else "cpu"])
def device(request) -> torch.device:
    return torch.device(request.param)


def with_skip(inputs: dict, D: bool = True, bias: bool = True, seed: int = 3) -> dict:
    """The inputs plus D and delta_bias (G, dim)."""
    gen = torch.Generator().manual_seed(seed)
    groups, dim = inputs["A"].shape[:2]
    skip, delta_bias = torch.randn(groups, dim, generator=gen), 0.5 * torch.randn(groups, dim, generator=gen)
    return {**inputs, **({"D": skip} if D else {}), **({"delta_bias": delta_bias} if bias else {})}


def final_states(u, step, A, B, routes):
    """The state after the last step of every route: (batch, G, dim, R, N)."""
    groups = step.shape[1]
    u = u.expand(-1, groups, -1, -1)
    per_group = []
    for g in range(groups):
        per_route = []
        for r in range(routes.shape[1]):
            h = step.new_zeros(step.shape[0], step.shape[2], A.shape[-1])  # (batch, dim, N)
            for t, pos in enumerate(routes.index[g, r].tolist()):
                keep = 0.0 if routes.starts[g, r, t] else 1.0
                dt = step[:, g, :, pos, None]
                h = torch.exp(dt * A[g]) * h * keep + dt * u[:, g, :, pos, None] * B[:, g, None, :, pos]
            per_route.append(h)
        per_group.append(torch.stack(per_route, 2))
    return torch.stack(per_group, 1)


def reference(u, dt, A, B, C, routes, D=None, delta_bias=None, softplus=False, sum_groups=False):
    """routed_scan_triton's function from the sequential reference: (y, final states)."""
    step = dt if delta_bias is None else dt + delta_bias[..., None]
    step = F.softplus(step) if softplus else step
    y = routed_scan_ref(u, step, A, B, C, routes)
    if D is not None:  # every route's skip term, weighted
        y = y + u * (D * routes.weight.to(D.dtype).sum(1, keepdim=True))[..., None]
    with torch.no_grad():
        last = final_states(u, step, A, B, routes)
    return (y.sum(1, keepdim=True) if sum_groups else y), last


def run(fn, inputs, routes, device, **options):
    """y, final states and every input's gradient of sum(y * fixed random weights), on CPU."""
    leaves = {k: v.to(device).requires_grad_() for k, v in inputs.items()}
    y, last = fn(**leaves, routes=routes, **options)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    (y * weights.to(device, y.dtype)).sum().backward()
    return y.detach().cpu(), last.cpu(), {k: v.grad.cpu() for k, v in leaves.items()}


def double(inputs: dict) -> dict:
    return {k: v.double() for k, v in inputs.items()}


CASES = {  # groups, routes per group, batch, dim, N, L, shared u, D, delta_bias, softplus, sum_groups
    "restarts-two-channel-blocks-two-chunks": (2, 2, 1, 20, 16, 37, True, False, False, False, False),
    "four-groups-own-u-softplus-summed": (4, 2, 2, 5, 5, 21, False, True, True, True, True),
    "one-group-bias-only-summed": (1, 3, 1, 3, 16, 40, True, False, True, True, True),
    "eight-groups-skip-only": (8, 1, 1, 2, 4, 9, True, True, False, False, True),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_the_sequential_reference(device, case):
    groups, per_group, batch, dim, state, length, shared_u, D, bias, softplus, sum_groups = case
    routes = random_routes(groups, per_group, length, seed=2)
    assert routes.starts[..., 1:].any() and not torch.all(routes.weight == 1)  # restarts inside, weights != 1
    inputs = with_skip(routed_inputs(batch, groups, dim, state, length, shared_u), D=D, bias=bias)
    options = {"softplus": softplus, "sum_groups": sum_groups}
    y_ref, last_ref, grads_ref = run(reference, double(inputs), routes, "cpu", **options)
    y, last, grads = run(routed_scan_triton, inputs, routes, device, **options)
    assert y.dtype == torch.float32 and y.shape == (batch, 1 if sum_groups else groups, dim, length)
    assert last.shape == (batch, groups, dim, per_group, state) and not last.requires_grad
    assert relative_error(y, y_ref) <= 1e-5
    assert relative_error(last, last_ref) <= 1e-5
    assert grads.keys() == inputs.keys()
    for name, grad in grads.items():
        assert grad.shape == inputs[name].shape and grad.dtype == torch.float32, name
        assert relative_error(grad, grads_ref[name]) <= 1e-4, name


def test_pyramid_routes_read_in_ss2d_layouts(device):
    """SS2D's tensors: u a (B, D, L) view of channels-last (B, L, D), dt a transposed contiguous
    (B, K, L, D), B and C transposed slices of one (B, K, L, R + 2N) projection; read in place."""
    routes = pyramid_routes("sweep", 6, 5, 4, 2)
    groups, levels, length = routes.shape
    batch, dim, state = 1, 6, 5
    gen = torch.Generator().manual_seed(0)
    base = {
        "u": torch.randn(batch, length, dim, generator=gen),
        "dt": torch.randn(batch, groups, length, dim, generator=gen) - 1.0,
        "x_dbl": torch.randn(batch, groups, length, 3 + 2 * state, generator=gen),
        "A": -torch.rand(groups, dim, state, generator=gen) * 3 - 0.1,
        "D": torch.randn(groups, dim, generator=gen),
        "delta_bias": 0.5 * torch.randn(groups, dim, generator=gen),
    }

    def ss2d_views(fn):
        def call(u, dt, x_dbl, **rest):
            _, B, C = torch.split(x_dbl, [3, state, state], dim=3)
            u, dt = u.transpose(1, 2).unsqueeze(1), dt.transpose(2, 3)
            return fn(u, dt, B=B.transpose(2, 3), C=C.transpose(2, 3), **rest)
        return call

    options = {"softplus": True, "sum_groups": True}
    y_ref, last_ref, grads_ref = run(ss2d_views(reference), double(base), routes, "cpu", **options)
    y, last, grads = run(ss2d_views(routed_scan_triton), base, routes, device, **options)
    assert y.shape == (batch, 1, dim, length) and last.shape == (batch, groups, dim, levels, state)
    assert relative_error(y, y_ref) <= 1e-5
    assert relative_error(last, last_ref) <= 1e-5
    for name, grad in grads.items():
        assert relative_error(grad, grads_ref[name]) <= 1e-4, name


@pytest.mark.parametrize("dtype,tolerance", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_half_precision_inputs(device, dtype, tolerance):
    """bf16 / fp16 inputs are computed in float32: y (float32) is the reference's on the same
    rounded values; gradients come in the input's dtype, so within its rounding (2^-8, 2^-11
    of the largest entry)."""
    routes = random_routes(2, 2, 20, seed=5)
    inputs = with_skip(routed_inputs(1, 2, 3, 5, 20, shared_u=True))
    inputs = {k: v.to(dtype) for k, v in inputs.items()}
    options = {"softplus": True, "sum_groups": True}
    y_ref, last_ref, grads_ref = run(reference, double(inputs), routes, "cpu", **options)
    y, last, grads = run(routed_scan_triton, inputs, routes, device, **options)
    assert y.dtype == torch.float32 and last.dtype == torch.float32
    assert relative_error(y, y_ref) <= 1e-5
    assert relative_error(last, last_ref) <= 1e-5
    for name, grad in grads.items():
        assert grad.dtype == dtype, name
        assert relative_error(grad, grads_ref[name]) <= tolerance, name


def test_two_runs_are_bit_identical(device):
    """Sums across programs (channel blocks, batch, groups) are torch reductions, not atomics."""
    routes = random_routes(2, 2, 12, seed=7)
    inputs = with_skip(routed_inputs(2, 2, 20, 5, 12, shared_u=True))
    options = {"softplus": True, "sum_groups": True}
    first, second = (run(routed_scan_triton, inputs, routes, device, **options) for _ in range(2))
    (y1, last1, grads1), (y2, last2, grads2) = first, second
    assert torch.equal(y1, y2) and torch.equal(last1, last2)
    for name in grads1:
        assert torch.equal(grads1[name], grads2[name]), name


def test_agrees_with_the_numba_kernel(device):
    pytest.importorskip("numba")
    from ssmad.ops.scan_numba import routed_scan_numba

    routes = random_routes(2, 2, 40, seed=9)
    inputs = with_skip(routed_inputs(1, 2, 4, 16, 40, shared_u=False))
    options = {"softplus": True, "sum_groups": False}
    y_numba, last_numba, grads_numba = run(routed_scan_numba, inputs, routes, "cpu", **options)
    y, last, grads = run(routed_scan_triton, inputs, routes, device, **options)
    assert relative_error(y, y_numba) <= 1e-5
    assert relative_error(last, last_numba) <= 1e-5
    for name, grad in grads.items():
        assert relative_error(grad, grads_numba[name]) <= 1e-4, name


def test_inference_gives_the_training_forward(device):
    """Without grad the forward keeps no chunk states and computes the same y and final states."""
    routes = random_routes(2, 2, 34, seed=11)
    inputs = {k: v.to(device) for k, v in with_skip(routed_inputs(1, 2, 3, 4, 34, shared_u=True)).items()}
    with torch.no_grad():
        y, last = routed_scan_triton(**inputs, routes=routes, softplus=True)
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    trained = routed_scan_triton(**leaves, routes=routes, softplus=True)
    assert not y.requires_grad and trained[0].requires_grad
    assert torch.equal(y, trained[0].detach()) and torch.equal(last, trained[1])


def test_cpu_tensors_without_the_interpreter_name_the_fix(monkeypatch):
    monkeypatch.setattr(scan_triton, "INTERPRETED", False)
    inputs = routed_inputs(1, 1, 2, 2, 3, shared_u=True)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        routed_scan_triton(**inputs, routes=random_routes(1, 1, 3, seed=0))

"""The selective-scan backends held against the sequential reference (forward, every gradient)."""

import pytest
import torch

from ssmad.ops import available_backends, selective_scan, selective_scan_ref
from ssmad.ops.backends import BACKEND_ENV

FAST_BACKENDS = [name for name in available_backends("cpu") if name != "reference"]
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(batch=2, dim=8, state=16, length=50, groups=2, dtype=torch.float32, seed=0):
    """Random scan arguments: delta in [-10, 10], A = -exp(log(1..N)) (S4D-real), grouped B/C."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    bc_shape = (batch, state, length) if groups is None else (batch, groups, state, length)
    return {
        "u": rand(batch, dim, length),
        "delta": torch.rand(batch, dim, length, generator=gen, dtype=dtype) * 20 - 10,
        "A": -torch.arange(1, state + 1, dtype=dtype).log().exp().repeat(dim, 1),
        "B": rand(*bc_shape),
        "C": rand(*bc_shape),
        "D": rand(dim),
        "z": rand(batch, dim, length),
        "delta_bias": rand(dim),
    }


def scan_and_grads(fn, inputs, **kwargs):
    """Output, last state and the gradients of a fixed random projection of the output."""
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    out, last = fn(**leaves, delta_softplus=True, return_last_state=True, **kwargs)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
    (out.float() * weights).sum().backward()
    return out, last, {k: v.grad for k, v in leaves.items()}


def relative_error(actual, expected):
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("groups", [None, 1, 4])
@pytest.mark.parametrize("state", [16, 5])
def test_forward_and_gradients_match_reference(backend, groups, state):
    inputs = make_inputs(state=state, groups=groups, length=70)
    out_ref, last_ref, grads_ref = scan_and_grads(selective_scan_ref, inputs)
    out, last, grads = scan_and_grads(selective_scan, inputs, backend=backend)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads.values())
    assert relative_error(out, out_ref) <= 1e-4
    assert relative_error(last, last_ref) <= 1e-4
    for name in ARG_NAMES:
        assert relative_error(grads[name], grads_ref[name]) <= 1e-3, name


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_long_sequence_forward_matches_reference(backend):
    inputs = make_inputs(batch=1, dim=4, length=4096, groups=2)
    with torch.no_grad():
        expected = selective_scan_ref(**inputs, delta_softplus=True)
        actual = selective_scan(**inputs, delta_softplus=True, backend=backend)
    assert torch.isfinite(actual).all()
    assert float((actual - expected).abs().max()) <= 1e-4 * float(expected.abs().max())


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_optional_arguments_absent(backend):
    inputs = make_inputs(groups=None)
    for name in ("D", "z", "delta_bias"):
        inputs.pop(name)
    inputs["delta"] = inputs["delta"].abs() / 10  # a valid step size without softplus
    with torch.no_grad():
        expected = selective_scan_ref(**inputs)
        actual = selective_scan(**inputs, backend=backend)
    assert relative_error(actual, expected) <= 1e-4


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(backend, dtype):
    inputs = {k: v.to(dtype) for k, v in make_inputs().items()}
    with torch.no_grad():
        expected = selective_scan_ref(**inputs, delta_softplus=True)
        actual = selective_scan(**inputs, delta_softplus=True, backend=backend)
    assert actual.dtype == dtype
    # Same rounded inputs, float32 inside: the outputs differ by one rounding to dtype at most.
    assert relative_error(actual, expected) <= 2 * torch.finfo(dtype).eps
    out, _, grads = scan_and_grads(selective_scan, inputs, backend=backend)
    assert grads["u"].dtype == dtype and torch.isfinite(grads["u"].float()).all()


def test_gradcheck_float64_torch_and_reference():
    inputs = make_inputs(batch=1, dim=4, state=3, length=9, groups=2, dtype=torch.float64)
    inputs["A"] = inputs["A"] / 4  # keep exp(dt A) away from 0 so every gradient is exercised
    leaves = tuple(v.requires_grad_() for v in inputs.values())

    def torch_path(*args):
        return selective_scan(*args, delta_softplus=True, backend="torch")

    def reference(*args):
        return selective_scan_ref(*args, delta_softplus=True)

    assert torch.autograd.gradcheck(torch_path, leaves)
    assert torch.autograd.gradcheck(reference, leaves)


@pytest.mark.skipif("numba" not in FAST_BACKENDS, reason="numba not installed")
def test_numba_float32_close_to_float64_reference():
    inputs = make_inputs(batch=2, dim=6, state=16, length=300, groups=3)
    _, _, grads64 = scan_and_grads(selective_scan_ref, {k: v.double() for k, v in inputs.items()})
    out64 = selective_scan_ref(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True)
    out, _, grads = scan_and_grads(selective_scan, inputs, backend="numba")
    assert relative_error(out, out64) <= 1e-5
    for name in ARG_NAMES:
        assert relative_error(grads[name], grads64[name]) <= 1e-4, name


def test_backend_choice_and_errors(monkeypatch):
    inputs = make_inputs(length=8)
    with pytest.raises(ValueError, match="unknown selective-scan backend 'fast'"):
        selective_scan(**inputs, backend="fast")
    with pytest.raises(ValueError, match="'mamba_ssm' runs on CUDA tensors"):
        selective_scan(**inputs, backend="mamba_ssm")
    monkeypatch.setenv(BACKEND_ENV, "nonsense")
    with pytest.raises(ValueError, match=BACKEND_ENV):
        selective_scan(**inputs)
    monkeypatch.setenv(BACKEND_ENV, "reference")
    with torch.no_grad():
        assert torch.equal(selective_scan(**inputs, delta_softplus=True), selective_scan_ref(**inputs, delta_softplus=True))


@pytest.mark.parametrize("through", ["argument", "environment"])
def test_old_backend_name_cuda_means_mamba_ssm_with_a_deprecation_warning(monkeypatch, through):
    inputs = make_inputs(length=8)  # CPU tensors, which mamba_ssm's kernel refuses, naming itself
    if through == "environment":
        monkeypatch.setenv(BACKEND_ENV, "cuda")
    options = {"backend": "cuda"} if through == "argument" else {}
    with pytest.warns(DeprecationWarning, match="'cuda' .* is now called 'mamba_ssm'"):
        with pytest.raises(ValueError, match="'mamba_ssm' runs on CUDA tensors"):
            selective_scan(**inputs, **options)


def test_auto_backend_keeps_float64_in_float64():
    inputs = {k: v.double() for k, v in make_inputs(batch=1, dim=4, state=3, length=50).items()}
    with torch.no_grad():
        auto = selective_scan(**inputs, delta_softplus=True)
        exact = selective_scan(**inputs, delta_softplus=True, backend="torch")
    assert auto.dtype == torch.float64
    assert torch.equal(auto, exact)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["mamba_ssm", "triton", "torch"])
def test_cuda_backends_match_reference(backend):
    if backend not in available_backends("cuda"):
        pytest.skip(f"backend {backend} unavailable on CUDA (mamba_ssm or triton not installed)")
    inputs = make_inputs()
    out_ref, _, grads_ref = scan_and_grads(selective_scan_ref, inputs)
    out, _, grads = scan_and_grads(selective_scan, {k: v.cuda() for k, v in inputs.items()}, backend=backend)
    assert relative_error(out.cpu(), out_ref) <= 1e-4
    for name in ARG_NAMES:
        assert relative_error(grads[name].cpu(), grads_ref[name]) <= 1e-3, name


@pytest.mark.skipif("numba" not in FAST_BACKENDS, reason="numba not installed")
@pytest.mark.parametrize("groups,dim", [(4, 64), (2, 40)])
def test_numba_reads_channels_last_inputs_in_place(groups, dim):
    """u and delta as transposed views of (batch, L, dim) tensors (SS2D's layout): read in place when
    each group's channels fill whole 16-channel vectors (64 / 4), padded otherwise (40 / 2)."""
    dense = make_inputs(batch=2, dim=dim, state=16, length=90, groups=groups)
    channels_last = dict(dense)
    for name in ("u", "delta", "z"):
        channels_last[name] = dense[name].transpose(1, 2).contiguous().transpose(1, 2)
    out_ref, last_ref, grads_ref = scan_and_grads(selective_scan_ref, dense)
    out, last, grads = scan_and_grads(selective_scan, channels_last, backend="numba")
    assert relative_error(out, out_ref) <= 1e-4
    assert relative_error(last, last_ref) <= 1e-4
    for name in ARG_NAMES:
        assert relative_error(grads[name], grads_ref[name]) <= 1e-3, name


@pytest.mark.skipif("numba" not in FAST_BACKENDS, reason="numba not installed")
def test_numba_forward_without_grad_equals_forward_with_grad():
    inputs = make_inputs(batch=1, dim=32, length=200, groups=2)
    with torch.no_grad():
        inference = selective_scan(**inputs, delta_softplus=True, backend="numba")
    training = selective_scan(**{k: v.clone().requires_grad_() for k, v in inputs.items()}, delta_softplus=True,
                              backend="numba")
    assert torch.equal(inference, training.detach())

"""SS2D: the routed K-direction scan against a slow per-direction reference on every backend,
and every scan order and direction count at the map sizes of 256x256 and 320x320 inputs."""

import pytest
import torch

from ss2d_reference import directions_reference
from ssmad.modules.ss2d import SS2D
from ssmad.ops import SCAN_ORDERS


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("num_directions", [2, 4, 8])
@pytest.mark.parametrize("kind", ["hilbert", "zigzag"])
def test_routed_scan_matches_per_direction_reference(monkeypatch, backend, kind, num_directions):
    monkeypatch.setenv("SSMAD_SCAN_BACKEND", backend)
    torch.manual_seed(0)
    ss2d = SS2D(8, scan_order=kind, num_directions=num_directions)
    x = torch.randn(2, ss2d.d_inner, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(ss2d.routed_scan(x), directions_reference(ss2d, x), rtol=1e-4, atol=1e-5)


def test_mamba_initialisation():
    torch.manual_seed(0)
    ss2d = SS2D(64, num_directions=4)
    assert ss2d.d_inner == 128 and ss2d.dt_rank == 4
    assert ss2d.x_proj_weight.shape == (4, 4 + 32, 128)
    assert ss2d.dt_projs_weight.shape == (4, 128, 4)
    dt = torch.nn.functional.softplus(ss2d.dt_projs_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    # log-uniform: about half the values below the geometric midpoint 1e-2
    assert 0.4 < (dt < 1e-2).float().mean() < 0.6
    torch.testing.assert_close(-torch.exp(ss2d.A_logs), -torch.arange(1.0, 17.0).expand(4 * 128, 16))
    assert torch.equal(ss2d.Ds, torch.ones(4 * 128))


@pytest.mark.parametrize("kind", SCAN_ORDERS)
def test_every_order_and_direction_count_runs_at_256_and_320(kind):
    torch.manual_seed(0)
    layers = {k: SS2D(4, scan_order=kind, num_directions=k) for k in (2, 4, 8)}
    # decoder map sizes of a 256x256 input (strides 32..4) and of a 320x320 input
    for side in (8, 16, 32, 64, 10, 20, 40, 80):
        x = torch.randn(1, side, side, 4)
        for layer in layers.values():
            with torch.no_grad():
                y = layer(x)
            assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_layer_on_cuda_computes_what_it_computes_on_the_cpu():
    torch.manual_seed(0)
    layer = SS2D(16, scan_order="sweep", num_directions=4, pyramid_levels=2)
    x = torch.randn(2, 12, 10, 16, requires_grad=True)
    outputs = []
    for device in ("cpu", "cuda"):
        layer.to(device).zero_grad()
        x_device = x.detach().to(device).requires_grad_()
        y = layer(x_device)
        (y * torch.linspace(-1, 1, y.numel(), device=device).view_as(y)).sum().backward()
        outputs.append((y.detach().cpu(), x_device.grad.cpu(), {n: p.grad.cpu() for n, p in layer.named_parameters()}))
    (y_cpu, gx_cpu, grads_cpu), (y_cuda, gx_cuda, grads_cuda) = outputs
    torch.testing.assert_close(y_cuda, y_cpu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx_cuda, gx_cpu, rtol=1e-3, atol=1e-5)
    for name, grad in grads_cpu.items():
        torch.testing.assert_close(grads_cuda[name], grad, rtol=1e-3, atol=1e-4, msg=name)

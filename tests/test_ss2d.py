"""SS2D: the batched K-direction scan core against a slow per-direction reference, and every
scan order and direction count at the map sizes of 256x256 and 320x320 inputs."""

import pytest
import torch

from ssmad.modules.ss2d import SS2D
from ssmad.ops import SCAN_ORDERS, scan_order, selective_scan_ref


def reference_scan_core(ss2d: SS2D, x: torch.Tensor) -> torch.Tensor:
    """One direction at a time, from the maps' definitions: x (B, D, H, W) -> (B, D, H, W)."""
    batch, d_inner, height, width = x.shape
    kind = ss2d.scan_order
    rot = torch.rot90(x, 1, dims=(2, 3))
    maps = [x, x.transpose(2, 3), rot, rot.transpose(2, 3)][: ss2d.num_directions // 2]
    undo = [
        lambda m: m,
        lambda m: m.transpose(2, 3),
        lambda m: torch.rot90(m, -1, dims=(2, 3)),
        lambda m: torch.rot90(m.transpose(2, 3), -1, dims=(2, 3)),
    ]
    out = torch.zeros_like(x)
    for k in range(ss2d.num_directions):
        m = maps[k // 2]
        h, w = m.shape[-2:]
        order = scan_order(kind, h, w)
        if k % 2:
            order = order.flip(0)
        seq = m.reshape(batch, d_inner, h * w)[:, :, order]  # (B, D, L) in visiting order
        proj = torch.einsum("bdl,cd->bcl", seq, ss2d.x_proj_weight[k])
        dt, b, c = torch.split(proj, [ss2d.dt_rank, ss2d.d_state, ss2d.d_state], dim=1)
        dt = torch.einsum("brl,dr->bdl", dt, ss2d.dt_projs_weight[k])
        channels = slice(k * d_inner, (k + 1) * d_inner)
        y = selective_scan_ref(
            seq, dt, -torch.exp(ss2d.A_logs[channels]), b, c, ss2d.Ds[channels],
            delta_bias=ss2d.dt_projs_bias[k], delta_softplus=True,
        )
        on_map = torch.empty_like(y)
        on_map[:, :, order] = y
        out += undo[k // 2](on_map.view(batch, d_inner, h, w))
    return out


@pytest.mark.parametrize("num_directions", [2, 4, 8])
@pytest.mark.parametrize("kind", ["hilbert", "zigzag"])
def test_scan_core_matches_per_direction_reference(kind, num_directions):
    torch.manual_seed(0)
    ss2d = SS2D(8, scan_order=kind, num_directions=num_directions)
    x = torch.randn(2, ss2d.d_inner, 5, 7)
    expected = reference_scan_core(ss2d, x)
    actual = ss2d.scan_core(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


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

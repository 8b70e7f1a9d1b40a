"""The SS2D path before the routed scan on every device, kept runnable as the benchmarks'
baseline ("today's path" of GPU issue 10): per pyramid level, the sub-regions batched, the K
directions gathered into copies, one selective scan by PyTorch blocks of T steps (one
``addcmul_`` per step), and the outputs merged back. Not used by ssmad itself.

    with baseline_path(model):  # every SS2D of ``model`` runs this path
        model(images)
    with baseline_path(model, "mamba_ssm"):  # the same with mamba_ssm's CUDA kernel
        model(images)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmad import ops
from ssmad.modules.ss2d import SS2D
from ssmad.ops.routes import level_weights, split_segments

_BLOCK_ELEMENTS = 1 << 19  # elements of one block's (T, batch, dim, N) buffer: ~2 MiB in float32
_MIN_BLOCK, _MAX_BLOCK = 4, 64


def scan_core_torch(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """y_t = <C_t, h_t>, h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t from h_0 = 0.

    u, dt (batch, dim, L); A (dim, N); B, C (batch, G, N, L), all one float dtype.
    Returns y (batch, dim, L) and the final state (batch, dim, N) (not differentiable).
    """
    return _TorchBlockScan.apply(u, dt, A, B, C)


def _block_length(batch: int, dim: int, state: int, length: int) -> int:
    per_step = max(batch * dim * state, 1)
    return min(max(_BLOCK_ELEMENTS // per_step, _MIN_BLOCK), _MAX_BLOCK, length)


def _time_major(x: Tensor, groups: int) -> Tensor:
    """(batch, dim, L) -> (L, batch, G, dim/G), contiguous."""
    batch, dim, length = x.shape
    return x.permute(2, 0, 1).reshape(length, batch, groups, dim // groups).contiguous()


def _block_states(decay: Tensor, drive: Tensor, entering: Tensor) -> Tensor:
    """Run the recurrence on one block in place: drive (T, b, G, dg, N) becomes the states h_t."""
    drive[0].addcmul_(decay[0], entering)
    for t in range(1, drive.shape[0]):
        drive[t].addcmul_(decay[t], drive[t - 1])
    return drive


class _TorchBlockScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
        batch, dim, length = u.shape
        groups, state = B.shape[1], A.shape[1]
        A_g = A.reshape(groups, dim // groups, state)  # (G, dg, N)
        u_tm, dt_tm = _time_major(u, groups), _time_major(dt, groups)  # (L, b, G, dg)
        B_tm = B.permute(3, 0, 1, 2).unsqueeze(3)  # (L, b, G, 1, N)
        C_tm = C.permute(3, 0, 1, 2).unsqueeze(3)
        block = _block_length(batch, dim, state, length)
        h = u.new_zeros(batch, groups, dim // groups, state)
        y_tm = u.new_empty(length, batch, groups, dim // groups)
        entering = []
        for start in range(0, length, block):
            stop = min(start + block, length)
            entering.append(h)
            decay = torch.exp(dt_tm[start:stop, ..., None] * A_g)  # (T, b, G, dg, N)
            drive = (dt_tm[start:stop] * u_tm[start:stop]).unsqueeze(-1) * B_tm[start:stop]
            states = _block_states(decay, drive, h)
            torch.linalg.vecdot(states, C_tm[start:stop], out=y_tm[start:stop])
            h = states[-1].clone()
        ctx.save_for_backward(u_tm, dt_tm, A_g, B_tm, C_tm, torch.stack(entering))
        ctx.block = block
        y = y_tm.reshape(length, batch, dim).permute(1, 2, 0)
        last = h.reshape(batch, dim, state)
        ctx.mark_non_differentiable(last)
        return y, last

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_last: Tensor) -> tuple[Tensor, ...]:
        u_tm, dt_tm, A_g, B_tm, C_tm, entering = ctx.saved_tensors
        length, batch, groups, per_group = u_tm.shape
        gy_tm = _time_major(grad_y, groups)  # (L, b, G, dg)
        grad_u, grad_dt = torch.empty_like(u_tm), torch.empty_like(dt_tm)
        grad_B = torch.empty_like(B_tm.squeeze(3))  # (L, b, G, N)
        grad_C = torch.empty_like(grad_B)
        grad_A = torch.zeros_like(A_g)
        carry = torch.zeros_like(entering[0])  # exp(dt A) * adjoint of the next block's first step
        starts = range(0, length, ctx.block)
        for index in reversed(range(len(starts))):
            start, stop = starts[index], min(starts[index] + ctx.block, length)
            h0 = entering[index]
            dt, u = dt_tm[start:stop], u_tm[start:stop]
            B, C = B_tm[start:stop], C_tm[start:stop]
            decay = torch.exp(dt[..., None] * A_g)
            states = _block_states(decay, (dt * u).unsqueeze(-1) * B, h0)
            adjoint = gy_tm[start:stop, ..., None] * C  # (T, b, G, dg, N): dL/dh_t
            adjoint[-1].add_(carry)
            for t in range(stop - start - 2, -1, -1):
                adjoint[t].addcmul_(decay[t + 1], adjoint[t + 1])
            carry = decay[0] * adjoint[0]
            previous = torch.cat([h0.unsqueeze(0), states[:-1]])  # h_{t-1}
            through_decay = adjoint * previous * decay  # dL/d(dt A) per (t, n)
            through_drive = torch.linalg.vecdot(adjoint, B)  # (T, b, G, dg): dL/d(dt u)
            grad_dt[start:stop] = torch.linalg.vecdot(through_decay, A_g) + through_drive * u
            grad_u[start:stop] = through_drive * dt
            grad_A += torch.einsum("tbgdn,tbgd->gdn", through_decay, dt)
            grad_B[start:stop] = torch.einsum("tbgdn,tbgd->tbgn", adjoint, dt * u)
            grad_C[start:stop] = torch.einsum("tbgdn,tbgd->tbgn", states, gy_tm[start:stop])

        def channels_major(x: Tensor) -> Tensor:  # (L, b, G, dg) -> (b, dim, L)
            return x.reshape(length, batch, groups * per_group).permute(1, 2, 0)

        return (
            channels_major(grad_u),
            channels_major(grad_dt),
            grad_A.reshape(groups * per_group, -1),
            grad_B.permute(1, 2, 3, 0),
            grad_C.permute(1, 2, 3, 0),
        )


def selective_scan_baseline(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor
) -> Tensor:
    """``ops.selective_scan(..., delta_softplus=True)`` by the block scan, in float32:
    u, delta (batch, dim, L); A (dim, N); B, C (batch, G, N, L); D, delta_bias (dim,)."""
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    dt = F.softplus(delta + delta_bias.float()[:, None])
    y, _ = scan_core_torch(u, dt, A, B.contiguous(), C.contiguous())
    return torch.addcmul(y, u, D.float()[:, None])


def scan_core(ss2d: SS2D, x: Tensor, scan: str = "block") -> Tensor:
    """K-direction selective scan of whole maps: (B, D, H, W) -> (B, D, H, W), summed over K;
    one selective scan with u (B, K*D, L) and B/C grouped (B, K, N, L), by the block scan
    (``scan="block"``) or mamba_ssm's kernel ("mamba_ssm")."""
    batch, d_inner, height, width = x.shape
    K, N, L = ss2d.num_directions, ss2d.d_state, height * width
    indices = ops.direction_indices(ss2d.scan_order, height, width, K).to(x.device)
    xs = ops.gather_directions(x, indices)  # (B, K, D, L)
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, ss2d.x_proj_weight.to(xs.dtype))
    dts, Bs, Cs = torch.split(x_dbl, [ss2d.dt_rank, N, N], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, ss2d.dt_projs_weight.to(dts.dtype))
    args = (xs.reshape(batch, K * d_inner, L), dts.reshape(batch, K * d_inner, L), -torch.exp(ss2d.A_logs),
            Bs, Cs, ss2d.Ds, ss2d.dt_projs_bias.reshape(-1))
    if scan == "mamba_ssm":
        y = ops.selective_scan(*args[:5], D=args[5], delta_bias=args[6], delta_softplus=True, backend="mamba_ssm")
    else:
        y = selective_scan_baseline(*args)
    return ops.merge_directions(y.view(batch, K, d_inner, L), indices, height, width).to(x.dtype)


def scan_regions(x: Tensor, scan_fn: Callable[[Tensor], Tensor], parts: int) -> Tensor:
    """Each of the ``parts`` x ``parts`` sub-regions of x (B, D, H, W) scanned on its own; regions of
    equal size batched into one ``scan_fn`` call."""
    batch, channels, height, width = x.shape
    rows = []
    for h0, nh, h in split_segments(height, parts):
        row = []
        for w0, nw, w in split_segments(width, parts):
            block = x[:, :, h0 : h0 + nh * h, w0 : w0 + nw * w]
            regions = (
                block.reshape(batch, channels, nh, h, nw, w)
                .permute(0, 2, 4, 1, 3, 5)
                .reshape(batch * nh * nw, channels, h, w)
            )
            scanned = scan_fn(regions).reshape(batch, nh, nw, channels, h, w).permute(0, 3, 1, 4, 2, 5)
            row.append(scanned.reshape(batch, channels, nh * h, nw * w))
        rows.append(torch.cat(row, dim=3))
    return torch.cat(rows, dim=2)


def pyramid_scan(ss2d: SS2D, x: Tensor, scan: str = "block") -> Tensor:
    """Levels 0..P of ``scan_regions`` combined by ``level_weights``: (B, D, H, W) -> (B, D, H, W)."""
    weights = level_weights(ss2d.pyramid_levels, ss2d.pyramid_merge)
    out = 0
    for p, weight in enumerate(weights):
        out = out + weight * scan_regions(x, lambda regions: scan_core(ss2d, regions, scan), 2**p)
    return out


@contextmanager
def baseline_path(model: nn.Module, scan: str = "block") -> Iterator[None]:
    """Every SS2D of ``model`` runs the baseline path (``pyramid_scan`` with ``scan``) inside the block."""
    layers = [m for m in model.modules() if isinstance(m, SS2D)]
    for layer in layers:
        layer.routed_scan = lambda x, layer=layer: pyramid_scan(layer, x, scan)
    try:
        yield
    finally:
        for layer in layers:
            del layer.routed_scan

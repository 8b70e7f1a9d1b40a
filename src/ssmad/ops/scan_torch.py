"""Pure-PyTorch selective-scan core for any device: exact sequential scan over short blocks.

Layout is time-major, (T, batch, G, dim/G, N) per block of T steps, so each step is one
in-place ``addcmul_`` on a contiguous slice. The forward keeps only the state entering each
block; the backward recomputes a block's states and runs the reverse adjoint scan on it.
"""

import torch
from torch import Tensor

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

"""The routed scan as a loop over blocks of steps: the backend an exported graph runs.

Every route of every group runs at once: the inputs are gathered in route order, time-major,
``(L, G, R, batch, dim)``, cut into blocks of ``BLOCK`` steps. For each block the decays
exp(dt A) (zero at a restart) and drives dt B u of its steps are computed in one go, the
recurrence h_t = decay_t h_{t-1} + drive_t runs step by step over the block, and
y_t = <C_t, h_t> is read for the whole block. Exact (no cumulative sums, no exp of anything
but dt A <= 0), so it cannot overflow.

The block recurrence is one autograd Function: PyTorch runs it here (inference only, no
backward); exported to ONNX it becomes the node ``ssmad::BlockScan``, whose ONNX function
(``ssmad.export.block_scan``) is a ``Scan`` over the blocks with the block's steps in its body.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .routes import Routes

BLOCK = 16  # steps per loop iteration
SCAN_DOMAIN, SCAN_OP = "ssmad", "BlockScan"


def routed_scan_loop(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor, routes: Routes
) -> Tensor:
    """:func:`~ssmad.ops.routed_selective_scan` (same arguments and result, float32) by blocks.

    Every route must visit each of the L positions once (pyramid and identity routes do), so
    outputs go back to the grid by gathers with the inverse orders. Inference only.
    """
    batch, dim, length = u.shape
    groups, num_routes, _ = routes.shape
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    dt = F.softplus(delta + delta_bias.float()[..., None])  # (b, G, D, L)
    steps = (length + BLOCK - 1) // BLOCK * BLOCK  # (no negative floor division: traced shape arithmetic truncates)
    index = F.pad(routes.index, (0, steps - length))  # (G, R, Lp); padded steps are scanned and dropped
    keep = F.pad(~routes.starts, (0, steps - length), value=True).to(torch.float32)
    order = index.permute(2, 0, 1).reshape(-1)  # (Lp*G*R,) in (t, g, r) order
    grouped = (index + torch.arange(groups)[:, None, None] * length).permute(2, 0, 1).reshape(-1)

    def gather(x: Tensor, positions: Tensor) -> Tensor:  # (L', b, c) -> (Lp/T, T, G, R, b, c)
        picked = x.index_select(0, positions.to(x.device))
        return picked.view(steps // BLOCK, BLOCK, groups, num_routes, batch, x.shape[-1])

    def per_group(x: Tensor) -> Tensor:  # (b, G, c, L) -> (G*L, b, c)
        return x.permute(1, 3, 0, 2).reshape(groups * length, batch, x.shape[2])

    y = block_scan(
        gather(per_group(dt), grouped),
        gather(u.permute(2, 0, 1), order),
        gather(per_group(B), grouped),
        gather(per_group(C), grouped),
        keep.permute(2, 0, 1).reshape(steps // BLOCK, BLOCK, groups, num_routes, 1, 1, 1).to(u.device),
        A.view(groups, 1, 1, dim, A.shape[-1]),
    )  # (Lp/T, T, G, R, b, D)
    inverse = torch.argsort(routes.index, dim=2)  # (G, R, L): step at which a route visits a position
    cells = torch.arange(groups * num_routes).view(groups, num_routes, 1)
    back = (inverse * groups * num_routes + cells).permute(2, 0, 1).reshape(-1).to(u.device)
    y = y.reshape(steps * groups * num_routes, batch, dim).index_select(0, back)
    y = y.view(length, groups * num_routes, batch, dim)
    weight = routes.weight.to(y).reshape(1, groups * num_routes, 1, 1)
    out = (y * weight).sum(1).permute(1, 2, 0)  # (b, D, L)
    skip = (D.float() * routes.weight.to(y).sum(1, keepdim=True)).sum(0)  # (D,)
    return torch.addcmul(out, u, skip[:, None])


def block_scan(dt: Tensor, u: Tensor, B: Tensor, C: Tensor, keep: Tensor, A: Tensor) -> Tensor:
    """Blocked recurrence from h = 0: dt, u (NB, T, G, R, b, D); B, C (NB, T, G, R, b, N);
    keep (NB, T, G, R, 1, 1, 1) 0 where the state restarts, else 1; A (G, 1, 1, D, N).
    Returns y (NB, T, G, R, b, D)."""
    return _BlockScan.apply(dt, u, B, C, keep, A)


class _BlockScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dt: Tensor, u: Tensor, B: Tensor, C: Tensor, keep: Tensor, A: Tensor) -> Tensor:
        if torch.onnx.is_in_onnx_export():
            # the graph gets ``symbolic``'s node; the traced values are never read, and tracing the
            # L steps one by one would cost minutes at 256 px
            return torch.zeros_like(dt)
        state = dt.new_zeros(dt.shape[2:] + A.shape[-1:])  # (G, R, b, D, N)
        outputs = []
        for dt_i, u_i, B_i, C_i, keep_i in zip(dt, u, B, C, keep):
            decay = torch.exp(dt_i[..., None] * A) * keep_i  # (T, G, R, b, D, N)
            states = (dt_i * u_i)[..., None] * B_i[..., None, :]
            for t in range(states.shape[0]):
                state = torch.addcmul(states[t], decay[t], state)
                states[t] = state
            outputs.append(torch.linalg.vecdot(states, C_i[..., None, :]))
        return torch.stack(outputs)

    @staticmethod
    def symbolic(g, dt, u, B, C, keep, A):
        y = g.op(f"{SCAN_DOMAIN}::{SCAN_OP}", dt, u, B, C, keep, A)
        y.setType(dt.type())  # y has dt's shape and type
        return y

"""The routed scan in plain PyTorch: the backend of every device without a kernel (MPS, CPU
without numba, CUDA without Triton) and of exported graphs.

Every route of every group runs at once: the inputs are gathered in route order, time-major,
``(L, G, R, batch, channels)``, and cut into blocks of T steps. Inside a block the recurrence
h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t is solved in closed form, for all T steps together:

    h_t = sum_{s <= t} exp(S_t - S_s) dt_s B_s u_s + exp(S_t) h_entering,  S_t = sum_{s <= t} dt_s A,

with the terms that cross a restart dropped. S_t - S_s <= 0 for s <= t (dt >= 0, A < 0), so the
exponentials cannot overflow, unlike exp(S_t) * exp(-S_s). A block is a handful of tensor
operations on a (T, T, G, R, batch, dim, N) tensor, so a call makes O(L / T) launches, and T is
chosen so that tensor stays near ``BLOCK_ELEMENTS``. The state entering each block is carried in
a Python loop; with grad enabled each block is checkpointed (its states are recomputed in the
backward), so memory stays at the gathered inputs plus one block.

While ``torch.onnx.export`` traces a model, the blocks become one node ``ssmad::BlockScan``
(blocks of ``BLOCK`` steps) whose ONNX function (``ssmad.export.block_scan``) loops over them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .routes import Routes

BLOCK = 16  # steps per block of an exported graph
BLOCK_ELEMENTS = 1 << 25  # elements of one block's (T, T, G, R, batch, dim, N) tensor: 128 MiB in float32
MIN_BLOCK, MAX_BLOCK = 4, 32
CPU_BLOCK = 4  # on a CPU the T-fold work of a block costs more than the launches it saves
SCAN_DOMAIN, SCAN_OP = "ssmad", "BlockScan"


def routed_scan_torch(
    u: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    routes: Routes,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    softplus: bool = False,
    sum_groups: bool = False,
) -> tuple[Tensor, Tensor]:
    """:func:`~ssmad.ops.scan_numba.routed_scan_numba` (same arguments, shapes and results) on
    any device, differentiable by autograd.

    u (batch, 1 or G, dim, L); dt (batch, G, dim, L); A (G, dim, N); B, C (batch, G, N, L);
    D, delta_bias (G, dim) or None; routes (G, R, L), each route a permutation of 0..L-1 (the
    outputs go back to the grid through the inverse orders). Returns y (batch, G, dim, L)
    ((batch, 1, dim, L) with ``sum_groups``) and the final states (batch, G, dim, R, N), in float32
    (float64 for float64 u).
    """
    batch, _, dim, length = u.shape
    groups, num_routes, _ = routes.shape
    compute = torch.promote_types(u.dtype, torch.float32)
    u, dt, A, B, C = (t.to(compute) for t in (u, dt, A, B, C))
    step = dt if delta_bias is None else dt + delta_bias.to(compute)[..., None]
    step = F.softplus(step) if softplus else step  # (b, G, dim, L)
    exporting = torch.onnx.is_in_onnx_export()
    block = BLOCK if exporting else _block_length(groups * num_routes * batch * dim * A.shape[-1], length, u.device)
    # padded steps have dt = 0, so the state passes them unchanged (no negative floor division:
    # traced shape arithmetic truncates)
    steps = (length + block - 1) // block * block
    index = routes.index.to(u.device)
    padded = F.pad(index, (0, steps - length))  # (G, R, Lp)
    grouped = (padded + torch.arange(groups, device=u.device)[:, None, None] * length).permute(2, 0, 1).reshape(-1)
    own = padded.permute(2, 0, 1).reshape(-1) if u.shape[1] == 1 else grouped

    def in_blocks(x: Tensor, positions: Tensor) -> Tensor:  # (b, G', c, L) -> (Lp/T, T, G, R, b, c)
        per_position = x.permute(1, 3, 0, 2).reshape(-1, batch, x.shape[2])  # (G'*L, b, c)
        return per_position.index_select(0, positions).view(steps // block, block, groups, num_routes, batch, -1)

    real = (torch.arange(steps, device=u.device) < length).to(compute)
    step_r = in_blocks(step, grouped) * real.view(-1, block, 1, 1, 1, 1)
    restart = F.pad(routes.starts.to(u.device), (0, steps - length)).permute(2, 0, 1)  # (Lp, G, R)
    restart = restart.reshape(steps // block, block, groups, num_routes)
    A_r = A.view(groups, 1, 1, dim, -1)
    u_r, B_r, C_r = in_blocks(u, own), in_blocks(B, grouped), in_blocks(C, grouped)
    if exporting:
        keep = (~restart).to(compute)[..., None, None, None]
        y_r = _BlockScan.apply(step_r, u_r, B_r, C_r, keep, A_r)
        last = torch.zeros(groups, num_routes, batch, dim, A.shape[-1], dtype=compute, device=u.device)
    else:
        y_r, last = _scan_blocks(step_r, u_r, B_r, C_r, restart, A_r)  # (Lp/T, T, G, R, b, dim)
    inverse = torch.argsort(index, dim=2)  # (G, R, L): the step at which a route visits a position
    cells = torch.arange(groups * num_routes, device=u.device).view(groups, num_routes, 1)
    back = (inverse * groups * num_routes + cells).permute(2, 0, 1).reshape(-1)
    y = y_r.reshape(steps * groups * num_routes, batch, dim).index_select(0, back)
    y = y.view(length, groups, num_routes, batch, dim)
    weight = routes.weight.to(device=u.device, dtype=compute)  # (G, R)
    y = torch.einsum("lgrbd,gr->bgdl", y, weight)
    if D is not None:
        y = y + (D.to(compute) * weight.sum(1, keepdim=True))[..., None] * u
    if sum_groups:
        y = y.sum(1, keepdim=True)
    return y, last.permute(2, 0, 3, 1, 4).detach()


def _block_length(per_step: int, length: int, device: torch.device) -> int:
    """Steps T per block: T * T * ``per_step`` near BLOCK_ELEMENTS, within [MIN_BLOCK, MAX_BLOCK]
    (CPU_BLOCK on a CPU), at most L."""
    if device.type == "cpu":
        return min(CPU_BLOCK, length)
    block = int(math.sqrt(BLOCK_ELEMENTS / max(per_step, 1)))
    return max(1, min(max(block, MIN_BLOCK), MAX_BLOCK, length))


def _scan_blocks(dt: Tensor, u: Tensor, B: Tensor, C: Tensor, restart: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
    """Blocks one after the other from h = 0: dt, u (NB, T, G, R, b, D); B, C (NB, T, G, R, b, N);
    restart (NB, T, G, R) bool; A (G, 1, 1, D, N). Returns y (NB, T, G, R, b, D) and the final
    state (G, R, b, D, N)."""
    block = dt.shape[1]
    steps = torch.arange(block, device=dt.device)
    causal = (steps[:, None] >= steps[None, :]).view(block, block, 1, 1)  # (t, s): s <= t
    h = dt.new_zeros(dt.shape[2:] + A.shape[-1:])
    differentiable = torch.is_grad_enabled() and any(t.requires_grad for t in (dt, u, B, C, A))
    outputs = []
    for i in range(dt.shape[0]):
        if differentiable:
            y, h = checkpoint(_block_scan, dt[i], u[i], B[i], C[i], restart[i], A, h, causal, use_reentrant=False)
        else:
            y, h = _block_scan(dt[i], u[i], B[i], C[i], restart[i], A, h, causal)
        outputs.append(y)
    return torch.stack(outputs), h


def _block_scan(
    dt: Tensor, u: Tensor, B: Tensor, C: Tensor, restart: Tensor, A: Tensor, h: Tensor, causal: Tensor
) -> tuple[Tensor, Tensor]:
    """One block in closed form: dt, u (T, G, R, b, D); B, C (T, G, R, b, N); restart (T, G, R);
    A (G, 1, 1, D, N); h (G, R, b, D, N) entering; causal (T, T, 1, 1) s <= t.
    Returns y (T, G, R, b, D) and the state leaving the block."""
    total = torch.cumsum(dt[..., None] * A, dim=0)  # S_t (T, G, R, b, D, N)
    segment = torch.cumsum(restart.to(torch.int32), dim=0)  # restarts up to step t
    linked = causal & (segment[:, None] == segment[None, :])  # (t, s): h_s reaches h_t
    gap = torch.where(linked[..., None, None, None], total[:, None] - total[None, :], -math.inf)
    drive = (dt * u)[..., None] * B[..., None, :]  # (T, G, R, b, D, N)
    states = (torch.exp(gap) * drive).sum(1)
    carried = torch.where((segment == 0)[..., None, None, None], torch.exp(total), 0.0)
    states = torch.addcmul(states, carried, h)
    y = torch.linalg.vecdot(states, C[..., None, :])
    return y, states[-1]


class _BlockScan(torch.autograd.Function):
    """The node ``ssmad::BlockScan`` of an exported graph: dt, u (NB, T, G, R, b, D); B, C
    (NB, T, G, R, b, N); keep (NB, T, G, R, 1, 1, 1) 0 where the state restarts, else 1;
    A (G, 1, 1, D, N) -> y (NB, T, G, R, b, D). Only traced: its values come from the ONNX function."""

    @staticmethod
    def forward(ctx, dt: Tensor, u: Tensor, B: Tensor, C: Tensor, keep: Tensor, A: Tensor) -> Tensor:
        return torch.zeros_like(dt)

    @staticmethod
    def symbolic(g, dt, u, B, C, keep, A):
        y = g.op(f"{SCAN_DOMAIN}::{SCAN_OP}", dt, u, B, C, keep, A)
        y.setType(dt.type())  # y has dt's shape and type
        return y

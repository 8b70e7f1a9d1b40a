"""The routed scan in plain PyTorch: the backend of every device without a kernel (MPS, CPU
without numba, float64, CUDA without Triton) and of exported graphs.

Every route of every group runs at once: the inputs are gathered in route order, time-major,
``(L, G, R, batch, channels)``, and cut into chunks of NB blocks of T steps, T about sqrt(NB T),
each chunk of about ``CHUNK_ELEMENTS`` state entries (fewer on a CPU). A chunk is scanned in
O(T + NB) tensor operations, not O(NB T):

1. inside every block at once, the recurrence h_t = a_t h_{t-1} + b_t (a_t = exp(dt_t A), zero
   at a restart; b_t = dt_t B_t u_t) from h = 0, step by step: T operations on (NB, ...) tensors;
2. the state entering each block, block after block: H_i = P_i H_{i-1} + h_i, with P_i the
   product of block i's decays, exp of the running sum of dt A over the block (never positive,
   so it cannot overflow, unlike exp(S_t) * exp(-S_s) forms), and h_i its last local state: NB
   operations on small tensors;
3. every state corrected at once, h_t += (a_1 ... a_t) H_entering, and y_t = <C_t, h_t>.

The work is a small multiple of the sequential scan's. Chunks run one after the other, carrying
the state; with grad enabled each chunk is checkpointed (recomputed in the backward), so autograd
keeps one chunk's intermediates at a time.

While ``torch.onnx.export`` traces a model, the whole routed scan becomes one node
``ssmad::RoutedScan`` on the map in raster layout (``_RoutedScanNode``), whose ONNX function
(``ssmad.export.scan_function``) computes it with standard operators and which ssmad's OpenVINO
extension replaces with its fused operator (``ssmad.export.openvino_ext``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .routes import Routes

# state entries (steps x G x R x batch x dim x N) of one chunk: on a GPU as many as launches
# allow, 64 MiB in float32; on a CPU few enough for its intermediates to stay in cache, 4 MiB
CHUNK_ELEMENTS = {"cpu": 1 << 20, "other": 1 << 24}
SCAN_DOMAIN, SCAN_OP = "ssmad", "RoutedScan"


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
    if torch.onnx.is_in_onnx_export():
        return _exported_scan(u, dt, A, B, C, routes, D, delta_bias, softplus, sum_groups)
    batch, _, dim, length = u.shape
    groups, num_routes, _ = routes.shape
    compute = torch.promote_types(u.dtype, torch.float32)
    u, dt, A, B, C = (t.to(compute) for t in (u, dt, A, B, C))
    step = dt if delta_bias is None else dt + delta_bias.to(compute)[..., None]
    step = F.softplus(step) if softplus else step  # (b, G, dim, L)
    per_step = groups * num_routes * batch * dim * A.shape[-1]  # state entries of one step
    budget = CHUNK_ELEMENTS["cpu" if u.device.type == "cpu" else "other"]
    chunk_steps = min(max(budget // per_step, 1), length)
    block = math.isqrt(chunk_steps - 1) + 1  # T = ceil(sqrt(steps of a chunk))
    # padded steps have dt = 0, so the state passes them unchanged
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
    y_r, last = _scan_chunks(step_r, u_r, B_r, C_r, restart, A_r, -(-chunk_steps // block))
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


def _scan_chunks(
    dt: Tensor, u: Tensor, B: Tensor, C: Tensor, restart: Tensor, A: Tensor, blocks_per_chunk: int
) -> tuple[Tensor, Tensor]:
    """Chunks of ``blocks_per_chunk`` blocks one after the other from h = 0: dt, u (NB, T, G, R, b, D);
    B, C (NB, T, G, R, b, N); restart (NB, T, G, R) bool; A (G, 1, 1, D, N). Returns y (NB, T, G, R,
    b, D) and the final state (G, R, b, D, N)."""
    h = dt.new_zeros(dt.shape[2:] + A.shape[-1:])
    differentiable = torch.is_grad_enabled() and any(t.requires_grad for t in (dt, u, B, C, A))
    outputs = []
    for start in range(0, dt.shape[0], blocks_per_chunk):
        part = slice(start, start + blocks_per_chunk)
        args = (dt[part], u[part], B[part], C[part], restart[part], A, h)
        y, h = checkpoint(_chunk_scan, *args, use_reentrant=False) if differentiable else _chunk_scan(*args)
        outputs.append(y)
    return torch.cat(outputs), h


def _chunk_scan(
    dt: Tensor, u: Tensor, B: Tensor, C: Tensor, restart: Tensor, A: Tensor, h: Tensor
) -> tuple[Tensor, Tensor]:
    """One chunk of NB blocks of T steps (shapes as in ``_scan_chunks``) entered with state h
    (G, R, b, D, N): the three phases of the module's docstring. Returns y and the leaving state."""
    keep = (~restart)[..., None, None, None]  # (NB, T, G, R, 1, 1, 1)
    rate = dt[..., None] * A  # (NB, T, G, R, b, D, N), <= 0
    decay = torch.where(keep, torch.exp(rate), 0.0)
    drive = (dt * u)[..., None] * B[..., None, :]
    # per-step and per-block tensors come from unbind, whose backward is one stack (indexing one
    # step at a time would make a full-size gradient per step)
    drives, decays = drive.unbind(1), decay.unbind(1)
    local = [drives[0]]  # phase 1: from h = 0 inside every block
    for drive_t, decay_t in zip(drives[1:], decays[1:]):
        local.append(torch.addcmul(drive_t, decay_t, local[-1]))
    states = torch.stack(local, 1)
    # decay from each block's entry through step t: exp of a running sum <= 0, zero after a restart
    # (a cumprod of the decays, whose backward is slow where factors underflow to zero)
    fresh = (torch.cumsum(restart.to(torch.int32), 1) == 0)[..., None, None, None]
    carried = torch.where(fresh, torch.exp(torch.cumsum(rate, 1)), 0.0)
    entering = []  # phase 2: block after block
    for leaving, through in zip(local[-1].unbind(0), carried[:, -1].unbind(0)):
        entering.append(h)
        h = torch.addcmul(leaving, through, h)
    states = torch.addcmul(states, carried, torch.stack(entering)[:, None])  # phase 3
    return torch.linalg.vecdot(states, C[..., None, :]), h


def _exported_scan(
    u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, routes: Routes, D: Tensor | None,
    delta_bias: Tensor | None, softplus: bool, sum_groups: bool,
) -> tuple[Tensor, Tensor]:
    """The routed scan as the traced node ``ssmad::RoutedScan`` (arguments and results as
    :func:`routed_scan_torch`); only SS2D's form exports: u shared by the groups, softplus, the
    groups summed. The final states are zeros (an exported graph does not return them)."""
    batch, shared, dim, length = u.shape
    groups, num_routes, _ = routes.shape
    if shared != 1 or not softplus or not sum_groups:
        raise NotImplementedError("an exported routed scan needs u shared by the groups, softplus and summed groups (SS2D's)")
    zeros = u.new_zeros(groups, dim)
    y = _RoutedScanNode.apply(
        u[:, 0].transpose(1, 2), dt.transpose(2, 3), A, B.transpose(2, 3), C.transpose(2, 3),
        zeros if D is None else D, zeros if delta_bias is None else delta_bias,
        routes.index.to(u.device), (~routes.starts).to(u.device, torch.float32), routes.weight.to(u.device, torch.float32),
    )
    last = u.new_zeros(batch, groups, dim, num_routes, A.shape[-1])
    return y.transpose(1, 2).unsqueeze(1), last


class _RoutedScanNode(torch.autograd.Function):
    """The node ``ssmad::RoutedScan`` of an exported graph, channels last: u (b, L, D);
    delta (b, G, L, D); A (G, D, N); B, C (b, G, L, N); D, bias (G, D); route index (G, R, L)
    int64; keep (G, R, L) 0 where the state restarts, else 1; weight (G, R) -> y (b, L, D), the
    groups' and routes' weighted sum of the scans of dt = softplus(delta + bias), plus the skip
    term. Only traced: its values come from the ONNX function or OpenVINO's fused operator."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, bias, index, keep, weight) -> Tensor:
        return torch.zeros_like(u)

    @staticmethod
    def symbolic(g, u, delta, A, B, C, D, bias, index, keep, weight):
        y = g.op(f"{SCAN_DOMAIN}::{SCAN_OP}", u, delta, A, B, C, D, bias, index, keep, weight)
        y.setType(u.type())  # y has u's shape and type
        return y

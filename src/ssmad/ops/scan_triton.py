"""Routed selective scan in Triton (forward and hand-written backward): the CUDA backend of
``ssmad.ops.routed_selective_scan``.

The function is :func:`~ssmad.ops.scan_numba.routed_scan_numba`'s, on CUDA tensors: every
(batch, group, channel) sequence is scanned along each of its group's routes
(:class:`~ssmad.ops.routes.Routes`), reading its inputs at the route's raster positions and
adding the route's weighted output there; the step's bias and softplus and the skip term D u are
computed inside, so no gathered copy and no (batch, G, dim, L) step tensor is made.

Algorithm. A program owns a (BLOCK_D channels x N_PAD states) float32 state tile of one (batch,
group) and scans it one step after the other (h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, restarted
where the route says): a route's steps depend on each other, so a program's time is its R * L
steps' latency. The inputs of step t + 1 (and the raster position of step t + 2) are loaded while
step t computes, and one warp per program keeps every reduction inside the warp. softplus is
max(x, 0) + log(1 + exp(-|x|)) (absolute error about 1e-7). The backward
recomputes the states of one chunk of ``CHUNK`` steps from the state saved at its entry into a
per-program scratch buffer, then runs the reverse adjoint scan over it (as the CPU kernel does).

Launch. Both kernels: grid (cdiv(dim, BLOCK_D), G, batch), BLOCK_D = min(32, 256 / N_PAD) channels
(at least 2, at most dim rounded up to a power of two; N padded to a power of two N_PAD with masks,
dim's tail masked), one warp (``NUM_WARPS``). A program loops over its
group's R routes; route 0 writes the program's output rows, later routes add to them (read by the
same program after a barrier). That needs every route to visit each of the L positions exactly once
(a permutation of 0..L-1, as pyramid and identity routes are): a position route 0 skips is never
written. u, dt, B, C, A, D, delta_bias, routes and grad_y are read in place through their strides
(any layout; loads coalesce along channels when the channel stride is 1, as in SS2D's transposed
views of channels-last (B, L, D) tensors); bf16, fp16 and fp32 are read as they are and computed
in float32.

Memory. y is written channels last, (batch, G, L, dim) float32 (summed over groups by torch with
``sum_groups``), and returned as its (batch, G or 1, dim, L) transposed view. With grad enabled
(``torch.is_grad_enabled()`` and an input needing grad) the forward keeps the state entering every
chunk: 4 * batch * G * R * ceil(L / CHUNK) * dim * N_PAD bytes (the numba kernel's formula). The
backward adds float32 buffers: per-group grad_u and grad_dt (batch, G, L, dim), per-channel-block
partials of grad_B and grad_C (batch, G, cdiv(dim, BLOCK_D), L, N), per-batch partials of grad_A
(batch, G, dim, N), grad_D and grad_delta_bias (batch, G, dim), and 4 * CHUNK * BLOCK_D * N_PAD
bytes of scratch per program.

Determinism. No atomics: each program writes only its own rows and partials, and the sums across
programs (over channel blocks for grad_B and grad_C, over batch for grad_A, grad_D and
grad_delta_bias, over groups for a shared u's gradient and for ``sum_groups``) are torch
reductions in a fixed order, so two runs give bit-identical outputs and gradients.

Interpreter. ``triton.jit`` reads TRITON_INTERPRET when it decorates a function: triton.language's
own helpers (``tl.sum``) when triton is first imported, these kernels when this module is. With
TRITON_INTERPRET=1 set before both, the kernels run on CPU tensors (slowly) in Triton's
interpreter, as the tests do on machines without a GPU; :data:`INTERPRETED` says which mode the
module got, and importing it interpreted after triton was imported compiled raises ImportError.
CPU tensors without the interpreter raise an error naming the fix.
"""

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime import JITFunction

from .routes import Routes

CHUNK = 32  # steps between saved states (the backward recomputes one chunk at a time)
NUM_WARPS = 1  # a step's tile is <= 256 floats: one warp holds it, and its reductions need no shared memory


@triton.jit
def _forward_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, index_ptr, keep_ptr, weight_ptr,
    y_ptr, last_ptr, entering_ptr,
    length, num_routes, dim, state,
    su_b, su_g, su_d, su_l, sdl_b, sdl_g, sdl_d, sdl_l, sA_g, sA_d, sA_n,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l, sD_g, sD_d, sz_g, sz_d,
    si_g, si_r, si_l, sk_g, sk_r, sk_l, sw_g, sw_r,
    SOFTPLUS: tl.constexpr, SAVE: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, N_PAD: tl.constexpr,
):
    """One (channel block, group, batch) program: every route, every step.

    u (batch, 1 or G, dim, L) (group stride 0 when shared); delta (batch, G, dim, L); A (G, dim, N);
    B, C (batch, G, N, L); D, bias (G, dim); index (G, R, L); keep (G, R, L) float32, 0 where the
    state restarts, else 1; weight (G, R). Writes y (batch, G, L, dim), last (batch, G, dim, R, N)
    and, with SAVE, entering (batch, G, R, chunks, dim, N_PAD), the state before each chunk of each
    route. Loads run one step ahead of the scan (the raster positions two steps).
    """
    block = tl.program_id(0)
    g, b = tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    groups = tl.num_programs(1)
    d = block * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, N_PAD)
    mask_d, mask_n = d < dim, n < state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + g * sA_g + d[:, None] * sA_d + n[None, :] * sA_n, mask=mask_dn, other=0.0).to(tl.float32)
    D = tl.load(D_ptr + g * sD_g + d * sD_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + g * sz_g + d * sz_d, mask=mask_d, other=0.0).to(tl.float32)
    u_at = u_ptr + b * su_b + g * su_g + d * su_d
    delta_at = delta_ptr + b * sdl_b + g * sdl_g + d * sdl_d
    B_at = B_ptr + b * sB_b + g * sB_g + n * sB_n
    C_at = C_ptr + b * sC_b + g * sC_g + n * sC_n
    y_at = y_ptr + (b * groups + g) * length * dim + d
    chunks = tl.cdiv(length, CHUNK)
    for r in range(num_routes):
        w = tl.load(weight_ptr + g * sw_g + r * sw_r).to(tl.float32)
        index_r, keep_r = index_ptr + g * si_g + r * si_r, keep_ptr + g * sk_g + r * sk_r
        h = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32)
        pos, keep = tl.load(index_r), tl.load(keep_r)
        pos_next = tl.load(index_r + si_l, mask=length > 1, other=0)
        keep_next = tl.load(keep_r + sk_l, mask=length > 1, other=1.0)
        u_t = tl.load(u_at + pos * su_l, mask=mask_d, other=0.0).to(tl.float32)
        delta_t = tl.load(delta_at + pos * sdl_l, mask=mask_d, other=0.0).to(tl.float32)
        B_t = tl.load(B_at + pos * sB_l, mask=mask_n, other=0.0).to(tl.float32)
        C_t = tl.load(C_at + pos * sC_l, mask=mask_n, other=0.0).to(tl.float32)
        for c in range(chunks):
            if SAVE:
                entering_at = entering_ptr + (((b * groups + g) * num_routes + r) * chunks + c) * dim * N_PAD
                tl.store(entering_at + d[:, None] * N_PAD + n[None, :], h, mask=mask_d[:, None])
            for k in range(tl.minimum(CHUNK, length - c * CHUNK)):
                t = c * CHUNK + k + 2  # the step whose position is loaded now
                pos_after = tl.load(index_r + t * si_l, mask=t < length, other=0)
                keep_after = tl.load(keep_r + t * sk_l, mask=t < length, other=1.0)
                u_n = tl.load(u_at + pos_next * su_l, mask=mask_d, other=0.0).to(tl.float32)
                delta_n = tl.load(delta_at + pos_next * sdl_l, mask=mask_d, other=0.0).to(tl.float32)
                B_n = tl.load(B_at + pos_next * sB_l, mask=mask_n, other=0.0).to(tl.float32)
                C_n = tl.load(C_at + pos_next * sC_l, mask=mask_n, other=0.0).to(tl.float32)
                dt = delta_t + bias
                if SOFTPLUS:
                    dt = tl.maximum(dt, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(dt)))
                h = tl.exp(dt[:, None] * A) * keep * h + (dt * u_t)[:, None] * B_t[None, :]
                out = w * (tl.sum(h * C_t[None, :], axis=1) + D * u_t)
                y_pos = y_at + pos * dim
                tl.store(y_pos, tl.load(y_pos, mask=mask_d & (r > 0), other=0.0) + out, mask=mask_d)
                pos, keep, u_t, delta_t, B_t, C_t = pos_next, keep_next, u_n, delta_n, B_n, C_n
                pos_next, keep_next = pos_after, keep_after
        last_at = last_ptr + (b * groups + g) * dim * num_routes * state + r * state
        tl.store(last_at + d[:, None] * num_routes * state + n[None, :], h, mask=mask_dn)
        tl.debug_barrier()  # the next route reads the y rows this one wrote


@triton.jit
def _backward_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, index_ptr, keep_ptr, weight_ptr,
    grad_y_ptr, entering_ptr, scratch_ptr,
    grad_u_ptr, grad_delta_ptr, grad_A_ptr, grad_B_ptr, grad_C_ptr, grad_D_ptr, grad_bias_ptr,
    length, num_routes, dim, state,
    su_b, su_g, su_d, su_l, sdl_b, sdl_g, sdl_d, sdl_l, sA_g, sA_d, sA_n,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l, sD_g, sD_d, sz_g, sz_d,
    si_g, si_r, si_l, sk_g, sk_r, sk_l, sw_g, sw_r, sy_b, sy_g, sy_d, sy_l,
    SOFTPLUS: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, N_PAD: tl.constexpr,
):
    """Reverse adjoint scan of every route of one (channel block, group, batch) program.

    Inputs as in :func:`_forward_kernel`; grad_y (batch, 1 or G, dim, L) (group stride 0 when
    summed); entering from the forward; scratch (programs, CHUNK, BLOCK_D, N_PAD). Writes grad_u,
    grad_delta (batch, G, L, dim) (grad_u per group: summed over groups outside for a shared u),
    grad_B, grad_C (batch, G, blocks, L, N) (this block's channel sums), grad_A (batch, G, dim, N),
    grad_D, grad_bias (batch, G, dim) (this batch entry's sums). Per chunk, last first: recompute
    its states from the saved one into scratch (scratch[k] = the state entering step k), then walk
    it backwards; loads run one step ahead (the positions two), as in the forward.
    """
    block = tl.program_id(0)
    g, b = tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    blocks, groups = tl.num_programs(0), tl.num_programs(1)
    d = block * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, N_PAD)
    mask_d, mask_n = d < dim, n < state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + g * sA_g + d[:, None] * sA_d + n[None, :] * sA_n, mask=mask_dn, other=0.0).to(tl.float32)
    D = tl.load(D_ptr + g * sD_g + d * sD_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + g * sz_g + d * sz_d, mask=mask_d, other=0.0).to(tl.float32)
    u_at = u_ptr + b * su_b + g * su_g + d * su_d
    delta_at = delta_ptr + b * sdl_b + g * sdl_g + d * sdl_d
    gy_at = grad_y_ptr + b * sy_b + g * sy_g + d * sy_d
    B_at = B_ptr + b * sB_b + g * sB_g + n * sB_n
    C_at = C_ptr + b * sC_b + g * sC_g + n * sC_n
    rows = (b * groups + g) * length * dim + d  # grad_u and grad_delta, + pos * dim
    part = ((b * groups + g) * blocks + block) * length * state + n  # grad_B and grad_C, + pos * state
    scratch_at = (scratch_ptr + ((b * groups + g) * blocks + block) * CHUNK * BLOCK_D * N_PAD
                  + tl.arange(0, BLOCK_D)[:, None] * N_PAD + n[None, :])
    grad_A = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32)
    grad_D = tl.zeros([BLOCK_D], dtype=tl.float32)
    grad_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    chunks = tl.cdiv(length, CHUNK)
    for r in range(num_routes):
        w = tl.load(weight_ptr + g * sw_g + r * sw_r).to(tl.float32)
        index_r, keep_r = index_ptr + g * si_g + r * si_r, keep_ptr + g * sk_g + r * sk_r
        later = r > 0  # routes after the first add to the rows the first wrote
        carry = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32)  # dL/dh_t through h_{t+1}
        for i in range(chunks):
            first = (chunks - 1 - i) * CHUNK
            steps = tl.minimum(CHUNK, length - first)
            entering_at = entering_ptr + (((b * groups + g) * num_routes + r) * chunks + chunks - 1 - i) * dim * N_PAD
            h = tl.load(entering_at + d[:, None] * N_PAD + n[None, :], mask=mask_d[:, None], other=0.0)
            pos, keep = tl.load(index_r + first * si_l), tl.load(keep_r + first * sk_l)
            pos_next = tl.load(index_r + (first + 1) * si_l, mask=first + 1 < length, other=0)
            keep_next = tl.load(keep_r + (first + 1) * sk_l, mask=first + 1 < length, other=1.0)
            u_t = tl.load(u_at + pos * su_l, mask=mask_d, other=0.0).to(tl.float32)
            delta_t = tl.load(delta_at + pos * sdl_l, mask=mask_d, other=0.0).to(tl.float32)
            B_t = tl.load(B_at + pos * sB_l, mask=mask_n, other=0.0).to(tl.float32)
            for k in range(steps):
                t = first + k + 2
                pos_after = tl.load(index_r + t * si_l, mask=t < length, other=0)
                keep_after = tl.load(keep_r + t * sk_l, mask=t < length, other=1.0)
                u_n = tl.load(u_at + pos_next * su_l, mask=mask_d, other=0.0).to(tl.float32)
                delta_n = tl.load(delta_at + pos_next * sdl_l, mask=mask_d, other=0.0).to(tl.float32)
                B_n = tl.load(B_at + pos_next * sB_l, mask=mask_n, other=0.0).to(tl.float32)
                tl.store(scratch_at + k * BLOCK_D * N_PAD, h)
                dt = delta_t + bias
                if SOFTPLUS:
                    dt = tl.maximum(dt, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(dt)))
                h = tl.exp(dt[:, None] * A) * keep * h + (dt * u_t)[:, None] * B_t[None, :]
                pos, keep, u_t, delta_t, B_t = pos_next, keep_next, u_n, delta_n, B_n
                pos_next, keep_next = pos_after, keep_after
            tl.debug_barrier()  # scratch written, now read back
            end = first + steps - 1  # the chunk's last step; h is the state after it
            pos, keep = tl.load(index_r + end * si_l), tl.load(keep_r + end * sk_l)
            pos_next = tl.load(index_r + (end - 1) * si_l, mask=end >= 1, other=0)
            keep_next = tl.load(keep_r + (end - 1) * sk_l, mask=end >= 1, other=1.0)
            u_t = tl.load(u_at + pos * su_l, mask=mask_d, other=0.0).to(tl.float32)
            delta_t = tl.load(delta_at + pos * sdl_l, mask=mask_d, other=0.0).to(tl.float32)
            B_t = tl.load(B_at + pos * sB_l, mask=mask_n, other=0.0).to(tl.float32)
            C_t = tl.load(C_at + pos * sC_l, mask=mask_n, other=0.0).to(tl.float32)
            gy_t = w * tl.load(gy_at + pos * sy_l, mask=mask_d, other=0.0).to(tl.float32)
            h_prev = tl.load(scratch_at + (steps - 1) * BLOCK_D * N_PAD)
            for j in range(steps):
                k = steps - 1 - j
                t = first + k - 2
                pos_after = tl.load(index_r + t * si_l, mask=t >= 0, other=0)
                keep_after = tl.load(keep_r + t * sk_l, mask=t >= 0, other=1.0)
                u_n = tl.load(u_at + pos_next * su_l, mask=mask_d, other=0.0).to(tl.float32)
                delta_n = tl.load(delta_at + pos_next * sdl_l, mask=mask_d, other=0.0).to(tl.float32)
                B_n = tl.load(B_at + pos_next * sB_l, mask=mask_n, other=0.0).to(tl.float32)
                C_n = tl.load(C_at + pos_next * sC_l, mask=mask_n, other=0.0).to(tl.float32)
                gy_n = w * tl.load(gy_at + pos_next * sy_l, mask=mask_d, other=0.0).to(tl.float32)
                h_prev_n = tl.load(scratch_at + tl.maximum(k - 1, 0) * BLOCK_D * N_PAD)  # unused after k = 0
                x = delta_t + bias
                dt, slope = x, 1.0
                if SOFTPLUS:
                    dt, slope = tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x))), 1.0 / (1.0 + tl.exp(-x))
                decay = tl.exp(dt[:, None] * A) * keep
                adj = carry + gy_t[:, None] * C_t[None, :]  # dL/dh_t
                q = adj * h_prev * decay  # dL/d(dt_t A)
                grad_A += q * dt[:, None]
                via_drive = tl.sum(adj * B_t[None, :], axis=1)  # dL/d(dt_t u_t)
                grad_dt = (tl.sum(q * A, axis=1) + via_drive * u_t) * slope
                grad_bias += grad_dt
                grad_D += gy_t * u_t
                carry = adj * decay
                row = rows + pos * dim
                grad_dt += tl.load(grad_delta_ptr + row, mask=mask_d & later, other=0.0)
                tl.store(grad_delta_ptr + row, grad_dt, mask=mask_d)
                grad_u = via_drive * dt + gy_t * D + tl.load(grad_u_ptr + row, mask=mask_d & later, other=0.0)
                tl.store(grad_u_ptr + row, grad_u, mask=mask_d)
                row = part + pos * state
                grad_B_t = tl.sum(adj * (dt * u_t)[:, None], axis=0)
                grad_B_t += tl.load(grad_B_ptr + row, mask=mask_n & later, other=0.0)
                tl.store(grad_B_ptr + row, grad_B_t, mask=mask_n)
                grad_C_t = tl.sum(gy_t[:, None] * h, axis=0)
                grad_C_t += tl.load(grad_C_ptr + row, mask=mask_n & later, other=0.0)
                tl.store(grad_C_ptr + row, grad_C_t, mask=mask_n)
                h = h_prev
                pos, keep, u_t, delta_t, B_t, C_t, gy_t, h_prev = (
                    pos_next, keep_next, u_n, delta_n, B_n, C_n, gy_n, h_prev_n)
                pos_next, keep_next = pos_after, keep_after
            tl.debug_barrier()  # the next chunk rewrites scratch; the next route reads these rows
    tl.store(grad_A_ptr + ((b * groups + g) * dim + d[:, None]) * state + n[None, :], grad_A, mask=mask_dn)
    tl.store(grad_D_ptr + (b * groups + g) * dim + d, grad_D, mask=mask_d)
    tl.store(grad_bias_ptr + (b * groups + g) * dim + d, grad_bias, mask=mask_d)


INTERPRETED: bool = not isinstance(_forward_kernel, JITFunction)  # TRITON_INTERPRET=1 when this module was imported
if INTERPRETED and isinstance(tl.sum, JITFunction):  # triton.language's own helpers were compiled-mode
    raise ImportError("TRITON_INTERPRET=1 was set after triton was imported; set it before the first import of triton")


def _tile(dim: int, state: int) -> tuple[int, int]:
    """(BLOCK_D, N_PAD): N padded to a power of two; BLOCK_D * N_PAD <= 256 (8 floats a thread) where
    N_PAD <= 128, BLOCK_D at most 32 and at most dim rounded up to a power of two."""
    n_pad = triton.next_power_of_2(state)
    return min(max(2, 256 // n_pad), 32, max(2, triton.next_power_of_2(dim))), n_pad


def _launch_context(x: Tensor) -> contextlib.AbstractContextManager:
    """Launch on x's GPU (Triton launches on the current device)."""
    if x.device.type != "cuda":
        if not INTERPRETED:
            raise RuntimeError(
                f"routed_scan_triton got {x.device.type} tensors, and ssmad.ops.scan_triton was imported "
                "without Triton's interpreter; move the tensors to a CUDA GPU, use routed_scan_numba on CPU, "
                "or set TRITON_INTERPRET=1 before triton is first imported (the interpreter: slow; for tests)"
            )
        return contextlib.nullcontext()
    return torch.cuda.device(x.device)


def _strides(x: Tensor, shared: bool = False) -> tuple[int, ...]:
    """x's strides, the group stride (dim 1) 0 where one slot serves every group."""
    strides = x.stride()
    return (strides[0], 0, *strides[2:]) if shared else strides


class _RoutedScan(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        u: Tensor,
        dt: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None,
        delta_bias: Tensor | None,
        routes: Routes,
        softplus: bool,
        sum_groups: bool,
        backward_follows: bool,
    ) -> tuple[Tensor, Tensor]:
        launch = _launch_context(dt)
        batch, groups, dim, length = dt.shape
        state, device = A.shape[-1], dt.device
        index = routes.index.to(device)
        keep = (~routes.starts).to(device, torch.float32)  # 0 where the state restarts
        weight = routes.weight.to(device, torch.float32)
        num_routes = index.shape[1]
        skip = torch.zeros(groups, dim, device=device) if D is None else D
        bias = torch.zeros(groups, dim, device=device) if delta_bias is None else delta_bias
        block_d, n_pad = _tile(dim, state)
        save = backward_follows and any(ctx.needs_input_grad[:7])
        chunks = triton.cdiv(length, CHUNK)
        y = torch.empty(batch, groups, length, dim, device=device)
        last = torch.empty(batch, groups, dim, num_routes, state, device=device)
        entering = torch.empty(batch, groups, num_routes, chunks if save else 0, dim, n_pad, device=device)
        args = (u, dt, A, B, C, skip, bias, index, keep, weight)
        with launch:
            _forward_kernel[(triton.cdiv(dim, block_d), groups, batch)](
                *args, y, last, entering, length, num_routes, dim, state,
                *_strides(u, u.shape[1] == 1), *dt.stride(), *A.stride(), *B.stride(), *C.stride(), *skip.stride(),
                *bias.stride(), *index.stride(), *keep.stride(), *weight.stride(),
                SOFTPLUS=softplus, SAVE=save, CHUNK=CHUNK, BLOCK_D=block_d, N_PAD=n_pad, num_warps=NUM_WARPS,
            )
        if save:
            ctx.save_for_backward(*args, entering)
            ctx.options = (softplus, D is not None, delta_bias is not None)
        ctx.mark_non_differentiable(last)
        if sum_groups:
            y = y.sum(1, keepdim=True)
        return y.transpose(-1, -2), last

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_last: Tensor) -> tuple[Tensor | None, ...]:
        u, dt, A, B, C, D, bias, index, keep, weight, entering = ctx.saved_tensors
        softplus, has_D, has_bias = ctx.options
        batch, groups, dim, length = dt.shape
        state, device, num_routes = A.shape[-1], dt.device, index.shape[1]
        block_d, n_pad = _tile(dim, state)
        blocks = triton.cdiv(dim, block_d)
        grad_u, grad_dt = (torch.empty(batch, groups, length, dim, device=device) for _ in range(2))
        grad_B, grad_C = (torch.empty(batch, groups, blocks, length, state, device=device) for _ in range(2))
        grad_A = torch.empty(batch, groups, dim, state, device=device)
        grad_D, grad_bias = (torch.empty(batch, groups, dim, device=device) for _ in range(2))
        scratch = torch.empty(batch * groups * blocks * CHUNK * block_d * n_pad, device=device)
        with _launch_context(dt):
            _backward_kernel[(blocks, groups, batch)](
                u, dt, A, B, C, D, bias, index, keep, weight, grad_y, entering, scratch,
                grad_u, grad_dt, grad_A, grad_B, grad_C, grad_D, grad_bias, length, num_routes, dim, state,
                *_strides(u, u.shape[1] == 1), *dt.stride(), *A.stride(), *B.stride(), *C.stride(), *D.stride(),
                *bias.stride(), *index.stride(), *keep.stride(), *weight.stride(),
                *_strides(grad_y, grad_y.shape[1] == 1),
                SOFTPLUS=softplus, CHUNK=CHUNK, BLOCK_D=block_d, N_PAD=n_pad, num_warps=NUM_WARPS,
            )
        if u.shape[1] != groups:  # shared u: the sum of every group's
            grad_u = grad_u.sum(1, keepdim=True)

        def state_first(x: Tensor, like: Tensor) -> Tensor:  # (batch, G, blocks, L, N) -> (batch, G, N, L)
            return x.sum(2).transpose(-1, -2).to(like.dtype)

        return (
            grad_u.transpose(-1, -2).to(u.dtype), grad_dt.transpose(-1, -2).to(dt.dtype), grad_A.sum(0).to(A.dtype),
            state_first(grad_B, B), state_first(grad_C, C), grad_D.sum(0).to(D.dtype) if has_D else None,
            grad_bias.sum(0).to(bias.dtype) if has_bias else None, None, None, None, None,
        )


def routed_scan_triton(
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
    """Scan every (batch, group, channel) sequence along its group's routes, on CUDA (or in
    Triton's interpreter), state and sums in float32.

    The function, shapes and return values of :func:`~ssmad.ops.scan_numba.routed_scan_numba`:
    along a route, h_t = exp(s_t A) h_{t-1} + s_t B_t u_t (h restarting from 0 where the route says),
    y_t = <C_t, h_t> + D u_t at the route's raster position of step t, the step s = softplus(dt +
    delta_bias) with ``softplus``, else dt + delta_bias. u (batch, 1 or G, dim, L) (1: shared by the
    groups); dt (batch, G, dim, L); A (G, dim, N); B, C (batch, G, N, L); D, delta_bias (G, dim) or
    None (zero); routes (G, R, L), each route a permutation of 0..L-1 (moved to dt's device: keep
    them there to save a copy per call). Inputs in float32, bfloat16 or float16, any strides.
    Returns y float32 (batch, G, dim, L), each group's weighted sum of its routes, skip term
    included ((batch, 1, dim, L), the sum over groups, with ``sum_groups``), a transposed view of a
    channels-last (batch, G or 1, L, dim) tensor; and the final states (batch, G, dim, R, N) float32
    (not differentiable). Gradients come in each input's dtype.
    """
    backward_follows = torch.is_grad_enabled()  # else the forward keeps no chunk states
    return _RoutedScan.apply(u, dt, A, B, C, D, delta_bias, routes, softplus, sum_groups, backward_follows)

"""Fused selective-scan core for CPU, JIT-compiled by numba (forward and hand-written backward).

The kernels run :class:`~ssmad.ops.routes.Routes`: every (batch, group, channel) sequence is
scanned along each of its group's routes, reading its inputs at the route's raster positions and
adding the route's weighted output there, so a 2-D layer's directions and pyramid levels need no
gathered copies. The plain selective scan is the case of one identity route per group. The
step's bias and softplus and the skip term D u are computed inside, so no (batch, dim, L) dt
tensor is made.

Layout: channels last. One SIMD vector holds 16 channels of one group, which share the route and
B_t, C_t (broadcast scalars), so the forward has no horizontal sum: the 16 x 16 (state x channel)
block of one step lives in stack arrays that LLVM keeps in registers or L1 (``stack_float32``),
and each state entry costs one polynomial exp and three fused multiply-adds per 16 updates.
States beyond 16 are further passes of 16 (a scan's state entries are independent; N < 16 is
padded with A = B = C = 0). u, delta, y and their gradients are (batch, G, L, channels) with the
channels at unit stride, and the kernels move their 16-channel rows as whole vectors
(``set_scaled``, ``add_scaled``): channels-last tensors (SS2D's) are read in place, dense
(batch, dim, L) ones copied channels-last first; channels are padded to a multiple of 16 (a copy)
only where needed.

The forward keeps the state entering every chunk of ``CHUNK`` steps when a backward will follow
(grad enabled). The backward recomputes a chunk's states and runs the reverse adjoint scan over
it; one task per (batch, part of the channels), so grad_B and grad_C, sums over channels, collect
in per-lane buffers and are reduced across lanes once per chunk by a transpose-and-add tree.

Consecutive steps' rows of u, delta, y and grad_y lie a row of all channels apart (a page or more
for wide layers), where the CPU's own prefetchers stop: the forward prefetches the rows of the step
``AHEAD`` steps on, the backward this block's rows of the next chunk while staging the present
one (the backward 1.1-1.2x faster, the forward within noise; docs/benchmarks.md).

The kernels are compiled for whole 512-bit vectors where the CPU has them (``whole_vectors``):
LLVM's tuning for Intel's AVX-512 cores otherwise splits each 16-channel vector into two halves.

Threads: each call splits its tasks into one run per thread torch uses; a small numba parallel loop
hands the runs out, on the OpenMP threads torch's own operations use (``ssmad.ops.numba_threads``).

The LLVM building blocks (vector rows, stack arrays, prefetch, 512-bit vectors) are in
``ssmad.ops.numba_intrinsics``, the float32 exp, softplus and sigmoid in ``ssmad.ops.numba_math``.
"""

import numba
import numpy as np
import torch
import torch.nn.functional as F
from numba import prange
from torch import Tensor

from . import numba_intrinsics, numba_math
from .numba_intrinsics import (
    JIT,
    LANES,
    add_product,
    add_row_sums,
    add_scaled,
    address,
    cache_keyed_on,
    fill,
    heap_rows,
    njit_noalias,
    prefetch,
    set_product,
    set_scaled,
    stack_float32,
    whole_vectors,
)
from .numba_math import exp_f32, sigmoid_f32, softplus_f32
from .numba_threads import run_tasks
from .routes import Routes

CHUNK = 32  # steps between saved states: the backward's buffers, 4 x CHUNK x 1 KB, stay in L2
PASS = 16  # state entries per pass
AHEAD = 16  # steps between the forward's prefetch of a row and its use
_ZERO, _ONE = np.float32(0.0), np.float32(1.0)


@numba.njit(inline="always", **JIT)
def _block():
    """A 16 x 16 float32 stack array."""
    return numba.carray(stack_float32(256), (PASS, LANES))


@numba.njit(inline="always", **JIT)
def _vector():
    """A 16-element float32 stack array."""
    return numba.carray(stack_float32(16), (LANES,))


@numba.njit(inline="always", **JIT)
def _chunk_blocks():
    """A (CHUNK, 16, 16) float32 stack array (32 KB)."""
    return numba.carray(stack_float32(8192), (CHUNK, PASS, LANES))


@numba.njit(inline="always", **JIT)
def _chunk_vectors():
    """A (CHUNK, 16) float32 stack array."""
    return numba.carray(stack_float32(512), (CHUNK, LANES))


assert PASS * LANES == 256 and CHUNK * PASS * LANES == 8192 and CHUNK * LANES == 512  # the literal sizes above


def _kernel(function):
    """A kernel: :func:`~ssmad.ops.numba_intrinsics.njit_noalias`, its cache keyed on the modules
    it inlines from too."""
    return cache_keyed_on(njit_noalias(function), numba_intrinsics, numba_math)


def _runs(function):
    """A parallel launcher of a kernel (compiled with it, so keyed on the same modules)."""
    return cache_keyed_on(numba.njit(parallel=True, **JIT)(function), numba_intrinsics, numba_math)


@_kernel
def _forward(tasks, u, delta, bias, A, B, C, D, softplus, index, starts, weight, y, entering, last):
    """u (batch, 1 or G, L, dim) (1: shared by the groups); delta (batch, G, L, dim); bias, D (G, dim);
    A (G, S, 16, dim); B, C (batch, G, L, S, 16); routes index, starts (G, R, L), weight (G, R), each
    route visiting every position once; dim % 16 == 0; u, delta and y with unit channel stride (any
    other strides). dt = softplus(delta + bias) if softplus else delta + bias. Writes y (batch,
    1 or G, L, dim) (1: the groups' outputs summed), each route's weighted output plus skip D u;
    last (batch, G, R, S, 16, dim), the final states; and, unless it is empty, entering (batch, G,
    R, S, chunks, dim / 16, 16, 16), the state before each chunk of each route. Packed (delta with
    one group slot while A has G): u, delta and y are (batch, 1, L, G * dim), group g's channels at
    g * dim, as the plain scan's channels-last tensors are. Runs the tasks (b, 16-channel block)
    numbered tasks[0] to tasks[1] - 1 of batch * dim / 16."""
    whole_vectors()
    length = delta.shape[2]
    groups, slabs, dim = A.shape[0], A.shape[1], A.shape[3]
    routes = index.shape[1]
    blocks = dim // LANES
    packed = delta.shape[1] != groups  # the groups side by side along the channels of one tensor
    shared_u, summed, save = u.shape[1] == 1, y.shape[1] == 1 and not packed, entering.size > 0
    h, a = _block(), _block()
    skip, u_t, dt_t, drive, acc = _vector(), _vector(), _vector(), _vector(), _vector()
    dt_g = heap_rows(length)  # dt at each raster position
    for task in range(tasks[0], tasks[1]):
        b, block = task // blocks, task % blocks
        c0 = block * LANES
        for g in range(groups):
            gd, gu, gy = (0, 0, 0) if packed else (g, 0 if shared_u else g, 0 if summed else g)
            off = g * dim if packed else 0
            for t in range(length):  # loops of their own: inside the scan's, softplus would not vectorise
                if t + AHEAD < length:
                    prefetch(address(delta, b, gd, t + AHEAD, off + c0))
                set_scaled(dt_g[t].ctypes.data, bias[g, c0:].ctypes.data, _ONE)
                add_scaled(dt_g[t].ctypes.data, address(delta, b, gd, t, off + c0), _ONE)
            if softplus:
                for t in range(length):
                    for j in range(LANES):
                        dt_g[t, j] = softplus_f32(dt_g[t, j])
            for s in range(slabs):
                set_scaled(skip.ctypes.data, D[g, c0:].ctypes.data, _ONE if s == 0 else _ZERO)
                for n in range(PASS):
                    set_scaled(a[n].ctypes.data, address(A, g, s, n, c0), _ONE)
                for r in range(routes):
                    w = weight[g, r]
                    first = s == 0 and r == 0 and (g == 0 or not summed)  # y is written, not added to
                    for t in range(length):
                        if starts[g, r, t] or t == 0:
                            for n in range(PASS):
                                for j in range(LANES):
                                    h[n, j] = _ZERO
                        if save and t % CHUNK == 0:
                            for n in range(PASS):
                                set_scaled(address(entering[b, g, r, s], t // CHUNK, block, n, 0), h[n].ctypes.data, _ONE)
                        pos = index[g, r, t]
                        if t + AHEAD < length:
                            ahead = index[g, r, t + AHEAD]
                            prefetch(address(u, b, gu, ahead, off + c0))
                            prefetch(address(y, b, gy, ahead, off + c0))
                        set_scaled(u_t.ctypes.data, address(u, b, gu, pos, off + c0), _ONE)
                        set_scaled(dt_t.ctypes.data, dt_g[pos].ctypes.data, _ONE)
                        set_product(drive.ctypes.data, dt_t.ctypes.data, u_t.ctypes.data)
                        set_product(acc.ctypes.data, skip.ctypes.data, u_t.ctypes.data)
                        for n in range(PASS):
                            b_n, c_n = B[b, g, pos, s, n], C[b, g, pos, s, n]
                            for j in range(LANES):
                                h_n = exp_f32(dt_t[j] * a[n, j]) * h[n, j] + drive[j] * b_n
                                h[n, j] = h_n
                                acc[j] += h_n * c_n
                        if first:
                            set_scaled(address(y, b, gy, pos, off + c0), acc.ctypes.data, w)
                        else:
                            add_scaled(address(y, b, gy, pos, off + c0), acc.ctypes.data, w)
                    for n in range(PASS):
                        set_scaled(address(last[b, g], r, s, n, c0), h[n].ctypes.data, _ONE)


@_kernel
def _backward(tasks, u, delta, bias, A, B, C, D, softplus, index, starts, weight, parts, entering, grad_y,
              grad_u, grad_delta, grad_bias, grad_A, grad_B, grad_C, grad_D):
    """Reverse adjoint scan of every route; shapes as in :func:`_forward`, grad_y like y.
    Runs the tasks numbered tasks[0] to tasks[1] - 1 of batch * parts: task (b, part) handles one of
    ``parts`` runs of the 16-channel blocks in every group. It writes grad_u (like u: with u shared,
    the sum over groups) and grad_delta (like delta), and adds into (zeros on entry) grad_bias,
    grad_D (batch, G, dim), grad_A (batch, G, S, 16, dim) and grad_B, grad_C (batch, G, parts, L,
    S, 16); packed as in :func:`_forward`. A chunk's inputs and per-step vectors are staged in stack
    arrays, which LLVM vectorises over, not the arguments. The recompute keeps exp(dt_t A) and
    exp(dt_t A) h_{t-1} of each step, all the reverse scan needs of the states; a restart zeroes
    the state going forward and the adjoint going back."""
    whole_vectors()
    length = delta.shape[2]
    groups, slabs, dim = A.shape[0], A.shape[1], A.shape[3]
    routes = index.shape[1]
    blocks = dim // LANES
    chunks = (length + CHUNK - 1) // CHUNK
    packed = delta.shape[1] != groups
    shared_u, summed = u.shape[1] == 1, grad_y.shape[1] == 1
    carried, decays = _chunk_blocks(), _chunk_blocks()  # exp(dt_t A) h_{t-1} (0 at a restart), exp(dt_t A)
    dts, slopes = _chunk_vectors(), _chunk_vectors()  # dt and d dt / d delta
    u_c, gy_c, drive_c = _chunk_vectors(), _chunk_vectors(), _chunk_vectors()  # u, w grad_y, dt u
    via_decay, via_drive = _chunk_vectors(), _chunk_vectors()  # dL/d(dt_t) through exp(dt_t A); dL/d(dt_t u_t)
    lanes_b, lanes_c = _chunk_blocks(), _chunk_blocks()  # grad_B, grad_C per channel lane
    adjoints = heap_rows(blocks * PASS).reshape((blocks, PASS, LANES))  # each block's, between chunks
    a, grad_a, adjoint, h = _block(), _block(), _block(), _block()
    skip, grad_b, grad_d = _vector(), _vector(), _vector()
    for task in range(tasks[0], tasks[1]):
        b, part = task // parts, task % parts
        first_block, end_block = part * blocks // parts, (part + 1) * blocks // parts
        for g in range(groups):
            gd, gu, gy_g = (0, 0, 0) if packed else (g, 0 if shared_u else g, 0 if summed else g)
            off = g * dim if packed else 0
            for s in range(slabs):
                for r in range(routes):
                    order, restart, w = index[g, r], starts[g, r], weight[g, r]
                    first_delta = s == 0 and r == 0  # every position once per route: written, not added to
                    first_u = first_delta and (g == 0 or not shared_u or packed)
                    fill(adjoints[first_block:end_block], _ZERO)
                    for chunk in range(chunks - 1, -1, -1):
                        first = chunk * CHUNK
                        steps = min(CHUNK, length - first)
                        fill(lanes_b, _ZERO)
                        fill(lanes_c, _ZERO)
                        for block in range(first_block, end_block):
                            c0 = block * LANES
                            set_scaled(skip.ctypes.data, D[g, c0:].ctypes.data, _ONE if s == 0 else _ZERO)
                            fill(grad_b, _ZERO)
                            fill(grad_d, _ZERO)
                            fill(grad_a, _ZERO)
                            for n in range(PASS):
                                set_scaled(a[n].ctypes.data, address(A, g, s, n, c0), _ONE)
                                set_scaled(adjoint[n].ctypes.data, adjoints[block, n].ctypes.data, _ONE)
                                set_scaled(h[n].ctypes.data, entering[b, g, r, s, chunk, block, n].ctypes.data, _ONE)
                            for k in range(steps):  # the chunk's inputs, in loops of their own to vectorise
                                pos = order[first + k]
                                if chunk:  # this block's rows of the next chunk, meanwhile
                                    ahead = order[first - CHUNK + k]
                                    prefetch(address(delta, b, gd, ahead, off + c0))
                                    prefetch(address(u, b, gu, ahead, off + c0))
                                    prefetch(address(grad_y, b, gy_g, ahead, off + c0))
                                set_scaled(dts[k].ctypes.data, bias[g, c0:].ctypes.data, _ONE)
                                add_scaled(dts[k].ctypes.data, address(delta, b, gd, pos, off + c0), _ONE)
                                set_scaled(u_c[k].ctypes.data, address(u, b, gu, pos, off + c0), _ONE)
                                set_scaled(gy_c[k].ctypes.data, address(grad_y, b, gy_g, pos, off + c0), w)
                            if softplus:
                                for k in range(steps):
                                    for j in range(LANES):
                                        slopes[k, j] = sigmoid_f32(dts[k, j])
                                        dts[k, j] = softplus_f32(dts[k, j])
                            else:
                                fill(slopes, _ONE)
                            for k in range(steps):  # per-step vectors
                                set_product(drive_c[k].ctypes.data, dts[k].ctypes.data, u_c[k].ctypes.data)
                            fill(via_decay, _ZERO)
                            fill(via_drive, _ZERO)
                            for k in range(steps):  # recompute the chunk's states
                                pos = order[first + k]
                                if restart[first + k]:
                                    for n in range(PASS):
                                        for j in range(LANES):
                                            h[n, j] = _ZERO
                                for n in range(PASS):
                                    b_n = B[b, g, pos, s, n]
                                    for j in range(LANES):
                                        decay = exp_f32(dts[k, j] * a[n, j])
                                        decays[k, n, j] = decay
                                        kept = decay * h[n, j]
                                        carried[k, n, j] = kept
                                        h_n = kept + drive_c[k, j] * b_n
                                        h[n, j] = h_n
                                        lanes_c[k, n, j] += gy_c[k, j] * h_n
                            for k in range(steps - 1, -1, -1):
                                pos = order[first + k]
                                for n in range(PASS):
                                    b_n, c_n = B[b, g, pos, s, n], C[b, g, pos, s, n]
                                    for j in range(LANES):
                                        adj = adjoint[n, j] + gy_c[k, j] * c_n  # dL/dh_t
                                        q = adj * carried[k, n, j]  # dL/d(dt_t A)
                                        via_decay[k, j] += q * a[n, j]
                                        grad_a[n, j] += q * dts[k, j]
                                        via_drive[k, j] += adj * b_n
                                        lanes_b[k, n, j] += adj * drive_c[k, j]
                                        adjoint[n, j] = adj * decays[k, n, j]  # carried to step t - 1
                                if restart[first + k]:
                                    for n in range(PASS):
                                        for j in range(LANES):
                                            adjoint[n, j] = _ZERO
                            for k in range(steps):
                                add_product(via_decay[k].ctypes.data, via_drive[k].ctypes.data, u_c[k].ctypes.data)
                                set_product(via_decay[k].ctypes.data, via_decay[k].ctypes.data, slopes[k].ctypes.data)
                                set_product(via_drive[k].ctypes.data, via_drive[k].ctypes.data, dts[k].ctypes.data)
                            for k in range(steps):
                                add_product(via_drive[k].ctypes.data, gy_c[k].ctypes.data, skip.ctypes.data)
                                add_scaled(grad_b.ctypes.data, via_decay[k].ctypes.data, _ONE)
                                add_product(grad_d.ctypes.data, gy_c[k].ctypes.data, u_c[k].ctypes.data)
                            for k in range(steps):  # now dL/d(delta_t) and dL/d(u_t)
                                pos = order[first + k]
                                row = address(grad_delta, b, gd, pos, off + c0)
                                if first_delta:
                                    set_scaled(row, via_decay[k].ctypes.data, _ONE)
                                else:
                                    add_scaled(row, via_decay[k].ctypes.data, _ONE)
                                row = address(grad_u, b, gu, pos, off + c0)
                                if first_u:
                                    set_scaled(row, via_drive[k].ctypes.data, _ONE)
                                else:
                                    add_scaled(row, via_drive[k].ctypes.data, _ONE)
                            add_scaled(grad_bias[b, g, c0:].ctypes.data, grad_b.ctypes.data, _ONE)
                            if s == 0:
                                add_scaled(grad_D[b, g, c0:].ctypes.data, grad_d.ctypes.data, _ONE)
                            for n in range(PASS):
                                set_scaled(adjoints[block, n].ctypes.data, adjoint[n].ctypes.data, _ONE)
                                add_scaled(address(grad_A[b], g, s, n, c0), grad_a[n].ctypes.data, _ONE)
                        for k in range(steps):  # the channel sums, once per chunk
                            pos = order[first + k]
                            add_row_sums(lanes_b[k].ctypes.data, grad_B[b, g, part, pos, s].ctypes.data)
                            add_row_sums(lanes_c[k].ctypes.data, grad_C[b, g, part, pos, s].ctypes.data)


def _pad(x: Tensor, dim: int, multiple: int) -> Tensor:
    """Zero-pad dimension ``dim`` of x to a multiple of ``multiple``: float32, contiguous."""
    x = x.detach().to(torch.float32)
    extra = -x.shape[dim] % multiple
    if extra:
        x = F.pad(x, [0, 0] * (x.dim() - 1 - dim % x.dim()) + [0, extra])
    return x.contiguous()


def _lanes(x: Tensor) -> Tensor:
    """(..., dim, L) -> float32 (..., L, dim16), dim padded to a multiple of 16, channels at unit
    stride (the kernels move 16-channel rows as vectors): a view of a channels-last tensor, a copy
    of any other (a dense (..., dim, L) one, an expanded grad_y) or where padding is needed."""
    x = x.detach().to(torch.float32).transpose(-1, -2)
    if x.shape[-1] % LANES:
        return _pad(x, -1, LANES)
    return x if x.stride(-1) == 1 else x.contiguous()


def _state_passes(x: Tensor) -> Tensor:
    """(..., N, L) -> (..., L, S, 16): state entries padded with zeros to S passes of 16."""
    x = _pad(x.transpose(-1, -2), -1, PASS)
    return x.view(*x.shape[:-1], -1, PASS)


def _per_channel(x: Tensor | None, groups: int, dim: int) -> Tensor:
    """(G, dim) or None (zeros) -> float32 (G, dim16)."""
    return _pad(torch.zeros(groups, dim) if x is None else x, -1, LANES)


@_runs
def _forward_runs(runs, u, delta, bias, A, B, C, D, softplus, index, starts, weight, y, entering, last):
    """:func:`_forward` over runs (threads, 2) of tasks [first, end), one run a thread."""
    for i in prange(runs.shape[0]):
        _forward((runs[i, 0], runs[i, 1]), u, delta, bias, A, B, C, D, softplus, index, starts, weight, y,
                 entering, last)


@_runs
def _backward_runs(runs, u, delta, bias, A, B, C, D, softplus, index, starts, weight, parts, entering, grad_y,
                   grad_u, grad_delta, grad_bias, grad_A, grad_B, grad_C, grad_D):
    """:func:`_backward` over runs (threads, 2) of tasks [first, end), one run a thread."""
    for i in prange(runs.shape[0]):
        _backward((runs[i, 0], runs[i, 1]), u, delta, bias, A, B, C, D, softplus, index, starts, weight, parts,
                  entering, grad_y, grad_u, grad_delta, grad_bias, grad_A, grad_B, grad_C, grad_D)


class _RoutedScan(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        u: Tensor,
        delta: Tensor,
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
        batch, length = delta.shape[0], delta.shape[-1]
        groups, dim, state = A.shape
        num_routes = routes.shape[1]
        u_l, delta_l = _lanes(u), _lanes(delta)  # (batch, 1 or G, L, dim16), or (batch, 1, L, G * dim) packed
        dim16 = -(-dim // LANES) * LANES
        A_l = _pad(_state_passes(A.transpose(1, 2)).permute(0, 2, 3, 1), -1, LANES)  # (G, S, 16, dim16)
        B_l, C_l = _state_passes(B), _state_passes(C)  # (batch, G, L, S, 16)
        D_l, bias_l = _per_channel(D, groups, dim), _per_channel(delta_bias, groups, dim)
        index, starts = routes.index.contiguous(), routes.starts.contiguous()
        weight = routes.weight.to(torch.float32).contiguous()
        slabs = A_l.shape[1]
        y = torch.empty(batch, 1 if sum_groups else delta_l.shape[1], length, delta_l.shape[-1])
        needs_grad = backward_follows and any(ctx.needs_input_grad[:7])
        chunks = -(-length // CHUNK) if needs_grad else 0
        entering = torch.empty(batch, groups, num_routes, slabs, chunks, dim16 // LANES, PASS, LANES)
        last = torch.empty(batch, groups, num_routes, slabs, PASS, dim16)
        run_tasks(
            _forward_runs, batch * (dim16 // LANES),
            u_l, delta_l, bias_l, A_l, B_l, C_l, D_l, softplus, index, starts, weight, y, entering, last,
        )
        if needs_grad:
            ctx.save_for_backward(u_l, delta_l, bias_l, A_l, B_l, C_l, D_l, index, starts, weight, entering)
            ctx.sizes, ctx.channels = (dim, state), delta.shape[-2]
            ctx.options = (softplus, D is not None, delta_bias is not None)
        last = last[..., :dim].flatten(3, 4)[..., :state, :].permute(0, 1, 4, 2, 3)  # (batch, G, dim, R, N)
        ctx.mark_non_differentiable(last)
        return y[..., : delta.shape[-2]].transpose(-1, -2), last

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_last: Tensor) -> tuple[Tensor | None, ...]:
        u_l, delta_l, bias_l, A_l, B_l, C_l, D_l, index, starts, weight, entering = ctx.saved_tensors
        dim, state = ctx.sizes
        softplus, has_D, has_bias = ctx.options
        batch, length = delta_l.shape[0], delta_l.shape[2]
        groups, slabs, _, dim16 = A_l.shape
        parts = min(dim16 // LANES, -(-2 * torch.get_num_threads() // batch))  # >= 2 tasks a thread
        grad_u, grad_delta = torch.empty(u_l.shape), torch.empty(delta_l.shape)
        grad_bias, grad_D = torch.zeros(batch, groups, dim16), torch.zeros(batch, groups, dim16)
        grad_A = torch.zeros(batch, groups, slabs, PASS, dim16)
        grad_B = torch.zeros(batch, groups, parts, length, slabs, PASS)
        grad_C = torch.zeros_like(grad_B)
        run_tasks(
            _backward_runs, batch * parts, u_l, delta_l, bias_l, A_l, B_l, C_l, D_l, softplus, index, starts, weight,
            parts, entering, _lanes(grad_y), grad_u, grad_delta, grad_bias, grad_A, grad_B, grad_C, grad_D,
        )

        def channels_first(x: Tensor) -> Tensor:  # (..., L, dim16) -> (..., dim, L)
            return x[..., : ctx.channels].transpose(-1, -2)

        def state_first(x: Tensor) -> Tensor:  # (batch, G, parts, L, S, 16) -> (batch, G, N, L)
            x = x[:, :, 0] if x.shape[2] == 1 else x.sum(2)  # one part: a view, not an 8 MB copy
            return x.flatten(-2)[..., :state].transpose(-1, -2)

        grad_A = grad_A.sum(0).flatten(1, 2)[:, :state, :dim].transpose(1, 2)  # (G, dim, N)
        grad_D = grad_D.sum(0)[:, :dim] if has_D else None
        grad_bias = grad_bias.sum(0)[:, :dim] if has_bias else None
        return (channels_first(grad_u), channels_first(grad_delta), grad_A, state_first(grad_B), state_first(grad_C),
                grad_D, grad_bias, None, None, None, None)


def routed_scan_numba(
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
    """Scan every (batch, group, channel) sequence along its group's routes, on CPU in float32.

    Along a route, h_t = exp(s_t A) h_{t-1} + s_t B_t u_t (h restarting from 0 where the route
    says), y_t = <C_t, h_t> + D u_t, all read and written at the route's raster position of step t;
    the step s = softplus(dt + delta_bias) with ``softplus``, else dt + delta_bias.
    u (batch, 1 or G, dim, L) (1: shared by the groups); dt (batch, G, dim, L); A (G, dim, N);
    B, C (batch, G, N, L); D, delta_bias (G, dim) or None (zero); routes (G, R, L) (see
    :class:`~ssmad.ops.routes.Routes`).
    Returns y (batch, G, dim, L), each group's weighted sum of its routes ((batch, 1, dim, L), their
    sum over groups, with ``sum_groups``), and the final states (batch, G, dim, R, N) (not
    differentiable). u and delta as transposed views of channels-last (..., L, dim) tensors are read
    in place, and y has that layout too; dense (..., dim, L) ones are copied channels-last first.
    """
    backward_follows = torch.is_grad_enabled()  # else the forward keeps no chunk states
    return _RoutedScan.apply(u, dt, A, B, C, D, delta_bias, routes, softplus, sum_groups, backward_follows)


def packs_groups(u: Tensor, delta: Tensor, per_group: int) -> bool:
    """Whether the kernels read u and delta (batch, dim, L) in place with the G groups side by side,
    as (batch, 1, dim, L) beside A (G, dim/G, N): both transposed views of channels-last tensors
    and each group's channels whole 16-channel vectors."""
    channels_last = u.transpose(1, 2).is_contiguous() and delta.transpose(1, 2).is_contiguous()
    return channels_last and per_group % LANES == 0

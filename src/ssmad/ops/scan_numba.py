"""Fused selective-scan core for CPU, JIT-compiled by numba (forward and hand-written backward).

The kernels run :class:`~ssmad.ops.routes.Routes`: every (batch, group, channel) sequence is
scanned along each of its group's routes, reading its inputs at the route's raster positions and
adding the route's weighted output there, so a 2-D layer's directions and pyramid levels need no
gathered copies. The plain selective scan is the case of one identity route per group.

One (batch, group, channel) row per parallel task; the loop over time is outer and the loop over
the N state entries inner, so the N-vector state stays in registers and no (batch, dim, L, N)
tensor is ever written. exp is a float32 polynomial the compiler vectorises (numba has no vector
math library here). The forward keeps the state entering every chunk of ``_CHUNK`` steps; the
backward recomputes a chunk's states and runs the reverse adjoint scan over it.
"""

import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic
from torch import Tensor

from .routes import Routes, identity_routes

_CHUNK = 64
_LANES = 16  # the state is padded to S slabs of 16: inner loops of constant length vectorise
_F32 = np.float32
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693359375)  # ln 2 split in two for an exact range reduction (Cephes)
_LN2_LO = _F32(-2.12194440e-4)
_EXP_MIN, _EXP_MAX = _F32(-87.3), _F32(88.3)
_P0, _P1, _P2 = _F32(1.9875691500e-4), _F32(1.3981999507e-3), _F32(8.3334519073e-3)
_P3, _P4, _P5 = _F32(4.1665795894e-2), _F32(1.6666665459e-1), _F32(5.0000001201e-1)
_ONE, _HALF = _F32(1.0), _F32(0.5)
_JIT = dict(fastmath=True, cache=True, error_model="numpy")


@intrinsic
def _int_bits_as_float32(typingctx, bits):
    """Reinterpret the bits of an int32 as a float32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@numba.njit(inline="always", **_JIT)
def _exp(x):
    """float32 exp(x), relative error ~1e-7; inputs clamped to [-87.3, 88.3]."""
    x = min(max(x, _EXP_MIN), _EXP_MAX)
    k = np.int32(x * _LOG2E + _F32(127.5))  # floor(x / ln 2 + 0.5) + 127 > 0: the biased exponent
    kf = _F32(k) - _F32(127.0)
    r = x - kf * _LN2_HI - kf * _LN2_LO  # |r| <= ln(2) / 2
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    return (p * r * r + r + _ONE) * _int_bits_as_float32(k << 23)


@numba.njit(parallel=True, **_JIT)
def _forward(u, dt, A, B, C, index, starts, weight, y, entering, last):
    """u (batch, 1 or G, dim, L) (1: shared by the groups); dt (batch, G, dim, L); A (G, dim, S, 16);
    B, C (batch, G, L, S, 16); routes index, starts (G, R, L), weight (G, R).
    Adds into y (batch, G, dim, L) (zeros on entry) and writes entering (batch, G, dim, R,
    chunks, S, 16), the state before each chunk of each route, and last (batch, G, dim, R, S, 16)."""
    batch, groups, dim, length = dt.shape
    routes, slabs = index.shape[1], A.shape[2]
    shared_u = u.shape[1] == 1
    for row in prange(batch * groups * dim):
        b, g, d = row // (groups * dim), (row // dim) % groups, row % dim
        a, bb, cc = A[g, d], B[b, g], C[b, g]
        uu, dd, yy = u[b, 0 if shared_u else g, d], dt[b, g, d], y[b, g, d]
        h = np.zeros((slabs, _LANES), dtype=np.float32)
        for r in range(routes):
            order, restart, w = index[g, r], starts[g, r], weight[g, r]
            for t in range(length):
                if t % _CHUNK == 0:
                    entering[b, g, d, r, t // _CHUNK] = h
                if restart[t]:
                    h[:] = 0.0
                pos = order[t]
                dt_t = dd[pos]
                drive = dt_t * uu[pos]
                acc = _F32(0.0)
                for s in range(slabs):
                    for j in range(_LANES):
                        h[s, j] = _exp(dt_t * a[s, j]) * h[s, j] + drive * bb[pos, s, j]
                        acc += h[s, j] * cc[pos, s, j]
                yy[pos] += w * acc
            last[b, g, d, r] = h


@numba.njit(parallel=True, **_JIT)
def _backward(u, dt, A, B, C, index, starts, weight, parts, entering, grad_y, grad_u, grad_dt, grad_A, grad_B, grad_C):
    """Reverse adjoint scan of every route. Task (b, g, part) handles the channels of group g split
    in ``parts`` and adds into (zeros on entry) grad_u, grad_dt (batch, G, dim, L), grad_A (batch,
    G, dim, S, 16) and grad_B, grad_C (batch, G, parts, L, S, 16); grad_y is (batch, G, dim, L)."""
    batch, groups, dim, length = dt.shape
    routes, slabs = index.shape[1], A.shape[2]
    shared_u = u.shape[1] == 1
    for task in prange(batch * groups * parts):
        b, g, part = task // (groups * parts), (task // parts) % groups, task % parts
        bb, cc = B[b, g], C[b, g]
        gb, gc = grad_B[b, g, part], grad_C[b, g, part]
        states = np.empty((_CHUNK + 1, slabs, _LANES), dtype=np.float32)
        decays = np.empty((_CHUNK, slabs, _LANES), dtype=np.float32)
        adjoint = np.empty((slabs, _LANES), dtype=np.float32)
        for d in range(part * dim // parts, (part + 1) * dim // parts):
            a, ga = A[g, d], grad_A[b, g, d]
            uu, dd, gyy = u[b, 0 if shared_u else g, d], dt[b, g, d], grad_y[b, g, d]
            guu, gdd = grad_u[b, g, d], grad_dt[b, g, d]
            for r in range(routes):
                order, restart, w = index[g, r], starts[g, r], weight[g, r]
                adjoint[:] = 0.0
                for chunk in range((length + _CHUNK - 1) // _CHUNK - 1, -1, -1):
                    first = chunk * _CHUNK
                    steps = min(_CHUNK, length - first)
                    states[0] = entering[b, g, d, r, chunk]
                    for k in range(steps):
                        t = first + k
                        pos = order[t]
                        keep = _F32(0.0) if restart[t] else _ONE  # the state entering step t is h_{t-1} * keep
                        dt_t = dd[pos]
                        drive = dt_t * uu[pos]
                        for s in range(slabs):
                            for j in range(_LANES):
                                decay = _exp(dt_t * a[s, j])
                                decays[k, s, j] = decay
                                states[k + 1, s, j] = decay * keep * states[k, s, j] + drive * bb[pos, s, j]
                    for k in range(steps - 1, -1, -1):
                        t = first + k
                        pos = order[t]
                        keep = _F32(0.0) if restart[t] else _ONE
                        dt_t, u_t, gy = dd[pos], uu[pos], w * gyy[pos]
                        drive = dt_t * u_t
                        via_decay = _F32(0.0)  # dL/d(dt_t) through exp(dt_t A)
                        via_drive = _F32(0.0)  # dL/d(dt_t u_t) through the drive dt_t B_t u_t
                        for s in range(slabs):
                            for j in range(_LANES):
                                adj = adjoint[s, j] + gy * cc[pos, s, j]  # dL/dh_t
                                gc[pos, s, j] += gy * states[k + 1, s, j]
                                q = adj * keep * states[k, s, j] * decays[k, s, j]  # dL/d(dt_t A)
                                via_decay += q * a[s, j]
                                ga[s, j] += q * dt_t
                                via_drive += adj * bb[pos, s, j]
                                gb[pos, s, j] += adj * drive
                                adjoint[s, j] = adj * decays[k, s, j] * keep  # carried to step t - 1
                        gdd[pos] += via_decay + via_drive * u_t
                        guu[pos] += via_drive * dt_t


def _slabs(x: Tensor, state: int) -> Tensor:
    """Pad the last dimension (N) with zeros to S*16 and split it: (..., N) -> (..., S, 16), contiguous.

    Padded entries have A = B = C = 0: their state stays 0 and adds nothing to y.
    """
    padded = -(-state // _LANES) * _LANES
    x = torch.nn.functional.pad(x, (0, padded - state)) if padded != state else x
    return x.reshape(*x.shape[:-1], padded // _LANES, _LANES).contiguous()


def _float32(x: Tensor) -> Tensor:
    return x.detach().to(torch.float32).contiguous()


def _use_torch_threads() -> None:
    numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


class _RoutedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, routes: Routes) -> tuple[Tensor, Tensor]:
        batch, groups, dim, length = dt.shape
        num_routes, state = routes.shape[1], A.shape[-1]
        u32, dt32 = _float32(u), _float32(dt)
        A_s = _slabs(_float32(A), state)  # (G, dim, S, 16)
        B_s = _slabs(_float32(B).transpose(2, 3), state)  # (batch, G, L, S, 16)
        C_s = _slabs(_float32(C).transpose(2, 3), state)
        index, starts, weight = routes.index.contiguous(), routes.starts.contiguous(), _float32(routes.weight)
        slabs = A_s.shape[2]
        y = torch.zeros(batch, groups, dim, length)
        entering = torch.empty(batch, groups, dim, num_routes, -(-length // _CHUNK), slabs, _LANES)
        last = torch.empty(batch, groups, dim, num_routes, slabs, _LANES)
        _use_torch_threads()
        _forward(u32.numpy(), dt32.numpy(), A_s.numpy(), B_s.numpy(), C_s.numpy(), index.numpy(), starts.numpy(),
                 weight.numpy(), y.numpy(), entering.numpy(), last.numpy())
        ctx.save_for_backward(u32, dt32, A_s, B_s, C_s, index, starts, weight, entering)
        ctx.state, ctx.u_groups = state, u.shape[1]
        last = last.flatten(-2)[..., :state]
        ctx.mark_non_differentiable(last)
        return y, last

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_last: Tensor) -> tuple[Tensor | None, ...]:
        u32, dt32, A_s, B_s, C_s, index, starts, weight, entering = ctx.saved_tensors
        batch, groups, dim, length = dt32.shape
        slabs, state = A_s.shape[2], ctx.state
        parts = min(dim, max(1, -(-8 // (batch * groups))))  # >= 8 tasks where possible
        grad_u, grad_dt = torch.zeros_like(dt32), torch.zeros_like(dt32)
        grad_A = torch.zeros(batch, groups, dim, slabs, _LANES)
        grad_B = torch.zeros(batch, groups, parts, length, slabs, _LANES)
        grad_C = torch.zeros_like(grad_B)
        _use_torch_threads()
        _backward(
            u32.numpy(), dt32.numpy(), A_s.numpy(), B_s.numpy(), C_s.numpy(), index.numpy(), starts.numpy(),
            weight.numpy(), parts, entering.numpy(), _float32(grad_y).numpy(), grad_u.numpy(), grad_dt.numpy(),
            grad_A.numpy(), grad_B.numpy(), grad_C.numpy(),
        )

        def state_major(x: Tensor) -> Tensor:  # (batch, G, parts, L, S, 16) -> (batch, G, N, L)
            return x.sum(2).flatten(-2)[..., :state].transpose(2, 3)

        if ctx.u_groups == 1:
            grad_u = grad_u.sum(1, keepdim=True)
        return grad_u, grad_dt, grad_A.sum(0).flatten(-2)[..., :state], state_major(grad_B), state_major(grad_C), None


def routed_scan_numba(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, routes: Routes) -> tuple[Tensor, Tensor]:
    """Scan every (batch, group, channel) sequence along its group's routes, on CPU in float32.

    Along a route, h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t (h restarting from 0 where the route
    says), y_t = <C_t, h_t>, all read and written at the route's raster position of step t.
    u (batch, 1 or G, dim, L) (1: shared by the groups); dt (batch, G, dim, L); A (G, dim, N);
    B, C (batch, G, N, L); routes (G, R, L) (see :class:`~ssmad.ops.routes.Routes`).
    Returns y (batch, G, dim, L), the weighted sum of the group's R route outputs, and the final
    states (batch, G, dim, R, N) (not differentiable).
    """
    return _RoutedScan.apply(u, dt, A, B, C, routes)


def scan_core_numba(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """y_t = <C_t, h_t>, h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t from h_0 = 0, on CPU in float32.

    u, dt (batch, dim, L); A (dim, N); B, C (batch, G, N, L), float32 CPU tensors.
    Returns y (batch, dim, L) and the final state (batch, dim, N) (not differentiable).
    """
    batch, dim, length = u.shape
    groups, state = B.shape[1], A.shape[1]
    per_group = dim // groups
    grouped = (batch, groups, per_group, length)
    y, last = routed_scan_numba(
        u.reshape(grouped), dt.reshape(grouped), A.reshape(groups, per_group, state), B, C,
        identity_routes(groups, length),
    )
    return y.view(batch, dim, length), last.view(batch, dim, state)

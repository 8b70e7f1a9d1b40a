"""Fused selective-scan core for CPU, JIT-compiled by numba (forward and hand-written backward).

One sequence (batch, channel) per parallel task; the loop over time is outer and the loop over
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
def _forward(u, dt, A, B, C, dim, groups, y, entering, last):
    """u, dt (R=batch*dim, L); A (dim, S, 16); B, C (batch, G, L, S, 16) -> y (R, L),
    entering (R, chunks, S, 16) the state before each chunk, last (R, S, 16)."""
    rows, length = u.shape
    slabs = A.shape[1]
    per_group = dim // groups
    for row in prange(rows):
        b, d = row // dim, row % dim
        g = d // per_group
        a, bb, cc = A[d], B[b, g], C[b, g]
        h = np.zeros((slabs, _LANES), dtype=np.float32)
        for t in range(length):
            if t % _CHUNK == 0:
                entering[row, t // _CHUNK] = h
            dt_t = dt[row, t]
            drive = dt_t * u[row, t]
            acc = _F32(0.0)
            for s in range(slabs):
                for j in range(_LANES):
                    h[s, j] = _exp(dt_t * a[s, j]) * h[s, j] + drive * bb[t, s, j]
                    acc += h[s, j] * cc[t, s, j]
            y[row, t] = acc
        last[row] = h


@numba.njit(parallel=True, **_JIT)
def _backward(u, dt, A, B, C, dim, groups, parts, entering, grad_y, grad_u, grad_dt, grad_A, grad_B, grad_C):
    """Reverse adjoint scan. Task (b, g, part) handles channels of group g split in ``parts``
    and accumulates grad_B, grad_C (batch, G, parts, L, S, 16); grad_u, grad_dt (R, L);
    grad_A (R, S, 16)."""
    rows, length = u.shape
    slabs = A.shape[1]
    batch = rows // dim
    per_group = dim // groups
    for task in prange(batch * groups * parts):
        b, g, part = task // (groups * parts), (task // parts) % groups, task % parts
        bb, cc = B[b, g], C[b, g]
        gb, gc = grad_B[b, g, part], grad_C[b, g, part]
        states = np.empty((_CHUNK + 1, slabs, _LANES), dtype=np.float32)
        decays = np.empty((_CHUNK, slabs, _LANES), dtype=np.float32)
        adjoint = np.empty((slabs, _LANES), dtype=np.float32)
        first = g * per_group + part * per_group // parts
        for d in range(first, g * per_group + (part + 1) * per_group // parts):
            row = b * dim + d
            a, ga = A[d], grad_A[row]
            adjoint[:] = 0.0
            for chunk in range((length + _CHUNK - 1) // _CHUNK - 1, -1, -1):
                start = chunk * _CHUNK
                steps = min(_CHUNK, length - start)
                states[0] = entering[row, chunk]
                for k in range(steps):
                    t = start + k
                    dt_t = dt[row, t]
                    drive = dt_t * u[row, t]
                    for s in range(slabs):
                        for j in range(_LANES):
                            decay = _exp(dt_t * a[s, j])
                            decays[k, s, j] = decay
                            states[k + 1, s, j] = decay * states[k, s, j] + drive * bb[t, s, j]
                for k in range(steps - 1, -1, -1):
                    t = start + k
                    dt_t, u_t, gy = dt[row, t], u[row, t], grad_y[row, t]
                    drive = dt_t * u_t
                    via_decay = _F32(0.0)  # dL/d(dt_t) through exp(dt_t A)
                    via_drive = _F32(0.0)  # dL/d(dt_t u_t) through the drive dt_t B_t u_t
                    for s in range(slabs):
                        for j in range(_LANES):
                            adj = adjoint[s, j] + gy * cc[t, s, j]  # dL/dh_t
                            gc[t, s, j] += gy * states[k + 1, s, j]
                            q = adj * states[k, s, j] * decays[k, s, j]  # dL/d(dt_t A)
                            via_decay += q * a[s, j]
                            ga[s, j] += q * dt_t
                            via_drive += adj * bb[t, s, j]
                            gb[t, s, j] += adj * drive
                            adjoint[s, j] = adj * decays[k, s, j]  # carried to step t - 1
                    grad_dt[row, t] = via_decay + via_drive * u_t
                    grad_u[row, t] = via_drive * dt_t


def _as_array(x: Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


def _slabs(x: Tensor, state: int) -> Tensor:
    """Pad the last dimension (N) with zeros to S*16 and split it: (..., N) -> (..., S, 16), contiguous.

    Padded entries have A = B = C = 0: their state stays 0 and adds nothing to y.
    """
    padded = -(-state // _LANES) * _LANES
    x = torch.nn.functional.pad(x, (0, padded - state)) if padded != state else x
    return x.reshape(*x.shape[:-1], padded // _LANES, _LANES).contiguous()


class _NumbaScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
        batch, dim, length = u.shape
        groups, state = B.shape[1], A.shape[1]
        u2 = u.detach().reshape(batch * dim, length).contiguous()
        dt2 = dt.detach().reshape(batch * dim, length).contiguous()
        A_s = _slabs(A.detach(), state)  # (dim, S, 16)
        B_s = _slabs(B.detach().transpose(2, 3), state)  # (batch, G, L, S, 16)
        C_s = _slabs(C.detach().transpose(2, 3), state)
        slabs = A_s.shape[1]
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # torch's setting
        y = torch.empty(batch * dim, length)
        entering = torch.empty(batch * dim, -(-length // _CHUNK), slabs, _LANES)
        last = torch.empty(batch * dim, slabs, _LANES)
        _forward(u2.numpy(), dt2.numpy(), A_s.numpy(), B_s.numpy(), C_s.numpy(), dim, groups,
                 y.numpy(), entering.numpy(), last.numpy())
        ctx.save_for_backward(u2, dt2, A_s, B_s, C_s, entering)
        ctx.state = state
        last = last.view(batch, dim, slabs * _LANES)[..., :state]
        ctx.mark_non_differentiable(last)
        return y.view(batch, dim, length), last

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_last: Tensor) -> tuple[Tensor, ...]:
        u2, dt2, A_s, B_s, C_s, entering = ctx.saved_tensors
        rows, length = u2.shape
        batch, groups, _, slabs, _ = B_s.shape
        dim, state = rows // batch, ctx.state
        parts = min(dim // groups, max(1, -(-8 // (batch * groups))))  # >= 8 tasks where possible
        grad_u, grad_dt = torch.empty_like(u2), torch.empty_like(dt2)
        grad_A = torch.zeros(rows, slabs, _LANES)
        grad_B = torch.zeros(batch, groups, parts, length, slabs, _LANES)
        grad_C = torch.zeros_like(grad_B)
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        _backward(
            u2.numpy(), dt2.numpy(), A_s.numpy(), B_s.numpy(), C_s.numpy(), dim, groups, parts, entering.numpy(),
            _as_array(grad_y.float().reshape(rows, length)), grad_u.numpy(), grad_dt.numpy(), grad_A.numpy(),
            grad_B.numpy(), grad_C.numpy(),
        )

        def state_major(x: Tensor) -> Tensor:  # (batch, G, parts, L, S, 16) -> (batch, G, N, L)
            return x.sum(2).flatten(-2)[..., :state].transpose(2, 3)

        return (
            grad_u.view(batch, dim, length),
            grad_dt.view(batch, dim, length),
            grad_A.view(batch, dim, slabs * _LANES)[..., :state].sum(0),
            state_major(grad_B),
            state_major(grad_C),
        )


def scan_core_numba(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """y_t = <C_t, h_t>, h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t from h_0 = 0, on CPU in float32.

    u, dt (batch, dim, L); A (dim, N); B, C (batch, G, N, L), float32 CPU tensors.
    Returns y (batch, dim, L) and the final state (batch, dim, N) (not differentiable).
    """
    return _NumbaScan.apply(u, dt, A, B, C)

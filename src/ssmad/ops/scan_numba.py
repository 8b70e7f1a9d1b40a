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
    kf = _F32(k - 127)
    r = x - kf * _LN2_HI - kf * _LN2_LO  # |r| <= ln(2) / 2
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    return (p * r * r + r + _ONE) * _int_bits_as_float32(k << 23)


@numba.njit(parallel=True, **_JIT)
def _forward(u, dt, A, B, C, dim, groups, y, entering, last):
    """u, dt (R=batch*dim, L); A (dim, N); B, C (batch, G, L, N) -> y (R, L),
    entering (R, chunks, N) the state before each chunk, last (R, N)."""
    rows, length = u.shape
    state = A.shape[1]
    per_group = dim // groups
    for row in prange(rows):
        b, d = row // dim, row % dim
        g = d // per_group
        a, bb, cc = A[d], B[b, g], C[b, g]
        h = np.zeros(state, dtype=np.float32)
        for t in range(length):
            if t % _CHUNK == 0:
                entering[row, t // _CHUNK] = h
            dt_t = dt[row, t]
            drive = dt_t * u[row, t]
            acc = _F32(0.0)
            for n in range(state):
                h[n] = _exp(dt_t * a[n]) * h[n] + drive * bb[t, n]
                acc += h[n] * cc[t, n]
            y[row, t] = acc
        last[row] = h


@numba.njit(parallel=True, **_JIT)
def _backward(u, dt, A, B, C, dim, groups, parts, entering, grad_y, grad_u, grad_dt, grad_A, grad_B, grad_C):
    """Reverse adjoint scan. Task (b, g, part) handles channels of group g split in ``parts``
    and accumulates grad_B, grad_C (batch, G, parts, L, N); grad_u, grad_dt (R, L); grad_A (R, N)."""
    rows, length = u.shape
    state = A.shape[1]
    batch = rows // dim
    per_group = dim // groups
    for task in prange(batch * groups * parts):
        b, g, part = task // (groups * parts), (task // parts) % groups, task % parts
        bb, cc = B[b, g], C[b, g]
        gb, gc = grad_B[b, g, part], grad_C[b, g, part]
        states = np.empty((_CHUNK + 1, state), dtype=np.float32)
        decays = np.empty((_CHUNK, state), dtype=np.float32)
        adjoint = np.empty(state, dtype=np.float32)
        for d in range(g * per_group + part * per_group // parts, g * per_group + (part + 1) * per_group // parts):
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
                    for n in range(state):
                        decay = _exp(dt_t * a[n])
                        decays[k, n] = decay
                        states[k + 1, n] = decay * states[k, n] + drive * bb[t, n]
                for k in range(steps - 1, -1, -1):
                    t = start + k
                    dt_t, u_t, gy = dt[row, t], u[row, t], grad_y[row, t]
                    drive = dt_t * u_t
                    via_decay = _F32(0.0)
                    via_drive = _F32(0.0)
                    for n in range(state):
                        adj = adjoint[n] + gy * cc[t, n]
                        gc[t, n] += gy * states[k + 1, n]
                        q = adj * states[k, n] * decays[k, n]
                        via_decay += q * a[n]
                        ga[n] += q * dt_t
                        via_drive += adj * bb[t, n]
                        gb[t, n] += adj * drive
                        adjoint[n] = adj * decays[k, n]
                    grad_dt[row, t] = via_decay + via_drive * u_t
                    grad_u[row, t] = via_drive * dt_t


def _as_array(x: Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


class _NumbaScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
        batch, dim, length = u.shape
        groups, state = B.shape[1], A.shape[1]
        u2, dt2 = u.detach().reshape(batch * dim, length).contiguous(), dt.detach().reshape(batch * dim, length).contiguous()
        B_t, C_t = B.detach().transpose(2, 3).contiguous(), C.detach().transpose(2, 3).contiguous()  # (b, G, L, N)
        A_c = A.detach().contiguous()
        y = torch.empty(batch * dim, length)
        entering = torch.empty(batch * dim, math.ceil(length / _CHUNK), state)
        last = torch.empty(batch * dim, state)
        _forward(u2.numpy(), dt2.numpy(), A_c.numpy(), B_t.numpy(), C_t.numpy(), dim, groups, y.numpy(), entering.numpy(), last.numpy())
        ctx.save_for_backward(u2, dt2, A_c, B_t, C_t, entering)
        last = last.view(batch, dim, state)
        ctx.mark_non_differentiable(last)
        return y.view(batch, dim, length), last

    @staticmethod
    def backward(ctx, grad_y: Tensor, _grad_last: Tensor) -> tuple[Tensor, ...]:
        u2, dt2, A_c, B_t, C_t, entering = ctx.saved_tensors
        rows, length = u2.shape
        batch, groups, _, state = B_t.shape
        dim = rows // batch
        parts = min(dim // groups, max(1, -(-8 // (batch * groups))))  # >= 8 tasks where possible
        grad_u, grad_dt = torch.empty_like(u2), torch.empty_like(dt2)
        grad_A = torch.zeros(rows, state)
        grad_B = torch.zeros(batch, groups, parts, length, state)
        grad_C = torch.zeros(batch, groups, parts, length, state)
        _backward(
            u2.numpy(), dt2.numpy(), A_c.numpy(), B_t.numpy(), C_t.numpy(), dim, groups, parts, entering.numpy(),
            _as_array(grad_y.float().reshape(rows, length)), grad_u.numpy(), grad_dt.numpy(), grad_A.numpy(),
            grad_B.numpy(), grad_C.numpy(),
        )
        return (
            grad_u.view(batch, dim, length),
            grad_dt.view(batch, dim, length),
            grad_A.view(batch, dim, state).sum(0),
            grad_B.sum(2).transpose(2, 3),
            grad_C.sum(2).transpose(2, 3),
        )


def scan_core_numba(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """y_t = <C_t, h_t>, h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t from h_0 = 0, on CPU in float32.

    u, dt (batch, dim, L); A (dim, N); B, C (batch, G, N, L), float32 CPU tensors.
    Returns y (batch, dim, L) and the final state (batch, dim, N) (not differentiable).
    """
    return _NumbaScan.apply(u, dt, A, B, C)

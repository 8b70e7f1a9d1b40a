"""float32 exp, softplus and sigmoid for numba kernels, as polynomials that vectorise.

A few multiply-adds and an exponent-bit trick each, inlined into the loops of
``ssmad.ops.scan_numba``'s kernels over 16 channels; relative errors at most 2e-7 (exp) and 4e-7
(softplus).
"""

import numba
import numpy as np

from .numba_intrinsics import JIT, bits_float32, float32_bits

_F32 = np.float32
_LOG2E, _LN2 = _F32(1.4426950408889634), _F32(0.6931471805599453)
_ROUND = _F32(12582912.0 + 127.0)  # 1.5 * 2^23 + 127: adding it rounds x / ln 2 into the low mantissa bits
_EXP_MIN = _F32(-87.0)  # exp(-87) ~ 1.6e-38, the smallest power of two the exponent trick can form
# 1 + r + c2 r^2 + ... + c5 r^5: minimax relative error 1.0e-7 on |r| <= ln(2) / 2, exact at r = 0
_C2, _C3, _C4, _C5 = _F32(0.499992311), _F32(0.166670904), _F32(0.0418902077), _F32(0.00831471942)
_L3, _L5, _L7, _L9, _L11 = (_F32(1.0 / k) for k in (3, 5, 7, 9, 11))  # 2 atanh(s) = 2 s (1 + s^2 / 3 + ...)
_ZERO, _ONE, _TWO = _F32(0.0), _F32(1.0), _F32(2.0)


@numba.njit(inline="always", **JIT)
def exp_f32(x):
    """float32 exp(x) for x <= 88, relative error <= 2e-7; x below -87 gives exp(-87)."""
    x = max(x, _EXP_MIN)
    v = x * _LOG2E + _ROUND
    k = v - _ROUND  # round(x / ln 2)
    r = x - k * _LN2
    p = ((((_C5 * r + _C4) * r + _C3) * r + _C2) * r + _ONE) * r + _ONE
    return p * bits_float32(float32_bits(v) << 23)  # times 2^k


@numba.njit(inline="always", **JIT)
def softplus_f32(x):
    """float32 log(1 + exp(x)), relative error <= 4e-7: log1p(z) = 2 atanh(z / (2 + z)) as a series."""
    z = exp_f32(-abs(x))
    s = z / (_TWO + z)  # in (0, 1/3]
    s2 = s * s
    p = ((((_L11 * s2 + _L9) * s2 + _L7) * s2 + _L5) * s2 + _L3) * s2 + _ONE
    return max(x, _ZERO) + _TWO * s * p


@numba.njit(inline="always", **JIT)
def sigmoid_f32(x):
    """float32 1 / (1 + exp(-x)), the derivative of softplus."""
    z = exp_f32(-abs(x))
    return (_ONE if x >= _ZERO else z) / (_ONE + z)

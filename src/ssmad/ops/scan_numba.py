"""Fused selective-scan core for CPU, JIT-compiled by numba (forward and hand-written backward).

The kernels run :class:`~ssmad.ops.routes.Routes`: every (batch, group, channel) sequence is
scanned along each of its group's routes, reading its inputs at the route's raster positions and
adding the route's weighted output there, so a 2-D layer's directions and pyramid levels need no
gathered copies. The plain selective scan is the case of one identity route per group. The
step's bias and softplus and the skip term D u are computed inside, so no (batch, dim, L) dt
tensor is made.

Layout: channels last. One SIMD vector holds 16 channels of one group, which share the route and
B_t, C_t (broadcast scalars), so the forward has no horizontal sum: the 16 x 16 (state x channel)
block of one step lives in stack arrays that LLVM keeps in registers or L1 (``_stack_float32``),
and each state entry costs one polynomial exp and three fused multiply-adds per 16 updates.
States beyond 16 are further passes of 16 (a scan's state entries are independent; N < 16 is
padded with A = B = C = 0). u, delta, y and their gradients are (batch, G, L, channels) with the
channels at unit stride, and the kernels move their 16-channel rows as whole vectors
(``_set_scaled``, ``_add_scaled``): channels-last tensors (SS2D's) are read in place, dense
(batch, dim, L) ones copied channels-last first; channels are padded to a multiple of 16 (a copy)
only where needed.

The forward keeps the state entering every chunk of ``CHUNK`` steps when a backward will follow
(grad enabled). The backward recomputes a chunk's states and runs the reverse adjoint scan over
it; one task per (batch, part of the channels), so grad_B and grad_C, sums over channels, collect
in per-lane buffers and are reduced across lanes once per chunk by a transpose-and-add tree.

Consecutive steps' rows of u, delta, y and grad_y lie a row of all channels apart (a page or more
for wide layers), where the CPU's own prefetchers stop: the forward prefetches the rows of the step
``AHEAD`` steps on, the backward this block's rows of the next chunk while staging the present
one (the backward 1.1-1.2x faster, the forward within noise; README "Results").

The kernels are compiled for whole 512-bit vectors where the CPU has them (``_whole_vectors``):
LLVM's tuning for Intel's AVX-512 cores otherwise splits each 16-channel vector into two halves.

Threads: each call splits its tasks into one run per thread torch uses; a small numba parallel loop
hands the runs out, so the kernels run on the OpenMP threads torch's own operations use (one pool,
never both at once). Python threads of our own instead compiled in half the time but ran slower
between torch operations, whose idle OpenMP threads spin for the cores a while.
Measured on 2-core Zen4 and Intel Xeon machines (benchmarks/bench_scan.py, README "Results").
"""

import functools
import os

import numba
import numpy as np
import torch
import torch.nn.functional as F
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from torch import Tensor

from .routes import Routes

if not {"NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"} & os.environ.keys():
    # OpenMP first (numba tries TBB first): the OpenMP threads are torch's, one pool for both
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

CHUNK = 32  # steps between saved states: the backward's buffers, 4 x CHUNK x 1 KB, stay in L2
LANES = 16  # channels per vector
PASS = 16  # state entries per pass
AHEAD = 16  # steps between the forward's prefetch of a row and its use
_F32 = np.float32
_LOG2E, _LN2 = _F32(1.4426950408889634), _F32(0.6931471805599453)
_ROUND = _F32(12582912.0 + 127.0)  # 1.5 * 2^23 + 127: adding it rounds x / ln 2 into the low mantissa bits
_EXP_MIN = _F32(-87.0)  # exp(-87) ~ 1.6e-38, the smallest power of two the exponent trick can form
# 1 + r + c2 r^2 + ... + c5 r^5: minimax relative error 1.0e-7 on |r| <= ln(2) / 2, exact at r = 0
_C2, _C3, _C4, _C5 = _F32(0.499992311), _F32(0.166670904), _F32(0.0418902077), _F32(0.00831471942)
_L3, _L5, _L7, _L9, _L11 = (_F32(1.0 / k) for k in (3, 5, 7, 9, 11))  # 2 atanh(s) = 2 s (1 + s^2 / 3 + ...)
_ZERO, _ONE, _TWO = _F32(0.0), _F32(1.0), _F32(2.0)
# fastmath without reassociation: the rounding trick in _exp must not be folded away.
_JIT = dict(fastmath={"nnan", "ninf", "nsz", "arcp", "contract", "afn"}, error_model="numpy", cache=True)


@intrinsic
def _float32_bits(typingctx, x):
    """The bits of a float32 as an int32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _bits_float32(typingctx, bits):
    """An int32's bits as a float32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _stack_float32(typingctx, size):
    """Pointer to ``size`` (an integer literal) float32 on the stack: unlike a heap array, LLVM
    knows it aliases nothing and may keep it in registers."""
    if not isinstance(size, types.IntegerLiteral):
        return None
    count = size.literal_value

    def codegen(context, builder, signature, args):
        pointer = cgutils.alloca_once(builder, ir.FloatType(), size=ir.Constant(ir.IntType(64), count))
        pointer.align = 64  # whole cache lines: a 16-float vector never straddles two
        return pointer

    return types.CPointer(types.float32)(size), codegen


@numba.njit(inline="always", **_JIT)
def _heap_rows(rows):
    """An uninitialised (rows, 16) float32 heap array starting on a cache line (malloc gives 16 or
    32 bytes of alignment, and a vector straddling two lines loads slower)."""
    flat = np.empty((rows + 1) * LANES, dtype=np.float32)
    skip = -(flat.ctypes.data // 4) % LANES
    return flat[skip : skip + rows * LANES].reshape((rows, LANES))


@numba.njit(inline="always", **_JIT)
def _fill(x, value):
    """x[...] = value for a C-contiguous array, as one loop that becomes vector stores. numba's slice
    assignment (x[:] = value) walks the strides, which LLVM made 8-float scatters: 2048 of them
    per chunk for the backward's lane buffers."""
    flat = x.reshape(x.size)
    for i in range(flat.size):
        flat[i] = value


@numba.njit(inline="always", **_JIT)
def _block():
    """A 16 x 16 float32 stack array."""
    return numba.carray(_stack_float32(256), (PASS, LANES))


@numba.njit(inline="always", **_JIT)
def _vector():
    """A 16-element float32 stack array."""
    return numba.carray(_stack_float32(16), (LANES,))


@numba.njit(inline="always", **_JIT)
def _chunk_blocks():
    """A (CHUNK, 16, 16) float32 stack array (32 KB)."""
    return numba.carray(_stack_float32(8192), (CHUNK, PASS, LANES))


@numba.njit(inline="always", **_JIT)
def _chunk_vectors():
    """A (CHUNK, 16) float32 stack array."""
    return numba.carray(_stack_float32(512), (CHUNK, LANES))


assert PASS * LANES == 256 and CHUNK * PASS * LANES == 8192 and CHUNK * LANES == 512  # the literal sizes above


@intrinsic
def _add_row_sums(typingctx, block, out):
    """out[0:16] += the 16 row sums of the 16 x 16 float32 block at address ``block`` (addresses as
    int64), by a transpose-and-add tree: 15 vector additions and 30 shuffles for 256 numbers, where
    a sum per row is 15 additions in sequence (LLVM may not reassociate them: see ``_JIT``)."""
    def codegen(context, builder, signature, args):
        vector, mask = ir.VectorType(ir.FloatType(), LANES), ir.VectorType(ir.IntType(32), LANES)
        source = builder.inttoptr(args[0], vector.as_pointer())
        target = builder.inttoptr(args[1], vector.as_pointer())
        rows = [builder.load(builder.gep(source, [ir.Constant(ir.IntType(64), n)]), align=4) for n in range(PASS)]
        for run in (8, 4, 2, 1):  # a pair of vectors, each `run`-long partial sums of rows, to one of half as long
            low = ir.Constant(mask, [i for i in range(2 * LANES) if i // run % 2 == 0])
            high = ir.Constant(mask, [i for i in range(2 * LANES) if i // run % 2 == 1])
            rows = [builder.fadd(builder.shuffle_vector(x, y, low), builder.shuffle_vector(x, y, high))
                    for x, y in zip(rows[::2], rows[1::2])]
        builder.store(builder.fadd(builder.load(target, align=4), rows[0]), target, align=4)
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


def _fma(builder: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
    """x * y + z on 16-float vectors, fused (llvm.fma)."""
    vector = ir.VectorType(ir.FloatType(), LANES)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3), "llvm.fma.v16f32")
    return builder.call(fma, [x, y, z])


def _row_intrinsic(name: str, accumulate: bool, by_row: bool):
    """An intrinsic (target, x, y): target[0:16] = x[0:16] * y, or += with ``accumulate``, for the
    float32 vectors at int64 addresses; y a float32 scalar, or with ``by_row`` the row y[0:16] at
    an int64 address. One vector load or two, a multiply or FMA, and a store. The kernels move and
    combine the 16-channel rows of their arguments and buffers with these: written as loops over
    the 16 channels, LLVM unrolled them and vectorised the loop over steps around them instead,
    with gathers and scatters, or left them scalar (it could not tell the stack rows apart)."""
    def typer(typingctx, target, x, y):
        def codegen(context, builder, signature, args):
            vector = ir.VectorType(ir.FloatType(), LANES)
            out, x_row = (builder.inttoptr(address, vector.as_pointer()) for address in args[:2])
            x_value = builder.load(x_row, align=4)
            if by_row:
                y_value = builder.load(builder.inttoptr(args[2], vector.as_pointer()), align=4)
            else:
                y_value = builder.insert_element(ir.Constant(vector, None), args[2], ir.Constant(ir.IntType(32), 0))
                first_lane = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
                y_value = builder.shuffle_vector(y_value, y_value, first_lane)
            if accumulate:
                value = _fma(builder, x_value, y_value, builder.load(out, align=4))
            else:
                value = builder.fmul(x_value, y_value)
            builder.store(value, out, align=4)
            return context.get_dummy_value()

        return types.void(types.int64, types.int64, types.int64 if by_row else types.float32), codegen

    typer.__name__ = typer.__qualname__ = name  # numba keys intrinsics (and its cache) by name
    return intrinsic(typer)


_set_scaled = _row_intrinsic("_set_scaled", accumulate=False, by_row=False)  # target = scale * source
_add_scaled = _row_intrinsic("_add_scaled", accumulate=True, by_row=False)  # target += scale * source
_set_product = _row_intrinsic("_set_product", accumulate=False, by_row=True)  # target = x * y
_add_product = _row_intrinsic("_add_product", accumulate=True, by_row=True)  # target += x * y


@intrinsic
def _prefetch(typingctx, address):
    """Ask the CPU to bring the cache line at ``address`` (an int64) into its caches (LLVM's
    llvm.prefetch): a hint, never a fault. The kernels' rows of u, delta and y lie a row of all
    channels apart, a page or more for wide layers, where the CPU's own prefetchers stop."""
    def codegen(context, builder, signature, args):
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        kind = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        prefetch = cgutils.get_or_insert_function(builder.module, kind, "llvm.prefetch.p0")
        read, keep, data = ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)  # keep: in every cache level
        builder.call(prefetch, [builder.inttoptr(args[0], byte_pointer), read, keep, data])
        return context.get_dummy_value()

    return types.void(types.int64), codegen


@numba.njit(inline="always", **_JIT)
def _address(x, i, j, k, m):
    """The address of x[i, j, k, m] of a 4-D array, as an int64."""
    return x.ctypes.data + i * x.strides[0] + j * x.strides[1] + k * x.strides[2] + m * x.strides[3]


@intrinsic
def _whole_vectors(typingctx):
    """Let LLVM vectorise the calling function with whole 512-bit vectors (16 float32). Its tuning
    for Intel's AVX-512 cores prefers 256-bit ones, so the kernels' loops over a row's 16 channels
    became pairs of 8-float halves and took 1.4x as long. This sets LLVM's "prefer-vector-width"
    function attribute, a string attribute llvmlite's attribute set does not list (hence
    ``set.add``); on CPUs without AVX-512 the widest legal vectors are used, as before."""
    def codegen(context, builder, signature, args):
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.void(), codegen


def _declare_noalias(flags):
    flags.noalias = True
    return flags


def _kernel(function):
    """numba.njit(**_JIT), compiled with every array argument declared not to alias another, which
    numba's parallel loops declare for their bodies and njit offers no option for (through the
    dispatcher's flags hook: were it gone, only speed would suffer). Without it the forward ran
    1.6-1.7x slower at (1, 4x256, 1024) here. The wrappers always pass distinct output buffers."""
    dispatcher = numba.njit(**_JIT)(function)
    dispatcher._customize_flags = _declare_noalias
    return dispatcher


@numba.njit(inline="always", **_JIT)
def _exp(x):
    """float32 exp(x) for x <= 88, relative error <= 2e-7; x below -87 gives exp(-87)."""
    x = max(x, _EXP_MIN)
    v = x * _LOG2E + _ROUND
    k = v - _ROUND  # round(x / ln 2)
    r = x - k * _LN2
    p = ((((_C5 * r + _C4) * r + _C3) * r + _C2) * r + _ONE) * r + _ONE
    return p * _bits_float32(_float32_bits(v) << 23)  # times 2^k


@numba.njit(inline="always", **_JIT)
def _softplus(x):
    """float32 log(1 + exp(x)), relative error <= 4e-7: log1p(z) = 2 atanh(z / (2 + z)) as a series."""
    z = _exp(-abs(x))
    s = z / (_TWO + z)  # in (0, 1/3]
    s2 = s * s
    p = ((((_L11 * s2 + _L9) * s2 + _L7) * s2 + _L5) * s2 + _L3) * s2 + _ONE
    return max(x, _ZERO) + _TWO * s * p


@numba.njit(inline="always", **_JIT)
def _sigmoid(x):
    """float32 1 / (1 + exp(-x)), the derivative of softplus."""
    z = _exp(-abs(x))
    return (_ONE if x >= _ZERO else z) / (_ONE + z)


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
    _whole_vectors()
    length = delta.shape[2]
    groups, slabs, dim = A.shape[0], A.shape[1], A.shape[3]
    routes = index.shape[1]
    blocks = dim // LANES
    packed = delta.shape[1] != groups  # the groups side by side along the channels of one tensor
    shared_u, summed, save = u.shape[1] == 1, y.shape[1] == 1 and not packed, entering.size > 0
    h, a = _block(), _block()
    skip, u_t, dt_t, drive, acc = _vector(), _vector(), _vector(), _vector(), _vector()
    dt_g = _heap_rows(length)  # dt at each raster position
    for task in range(tasks[0], tasks[1]):
        b, block = task // blocks, task % blocks
        c0 = block * LANES
        for g in range(groups):
            gd, gu, gy = (0, 0, 0) if packed else (g, 0 if shared_u else g, 0 if summed else g)
            off = g * dim if packed else 0
            for t in range(length):  # loops of their own: inside the scan's, softplus would not vectorise
                if t + AHEAD < length:
                    _prefetch(_address(delta, b, gd, t + AHEAD, off + c0))
                _set_scaled(dt_g[t].ctypes.data, bias[g, c0:].ctypes.data, _ONE)
                _add_scaled(dt_g[t].ctypes.data, _address(delta, b, gd, t, off + c0), _ONE)
            if softplus:
                for t in range(length):
                    for j in range(LANES):
                        dt_g[t, j] = _softplus(dt_g[t, j])
            for s in range(slabs):
                _set_scaled(skip.ctypes.data, D[g, c0:].ctypes.data, _ONE if s == 0 else _ZERO)
                for n in range(PASS):
                    _set_scaled(a[n].ctypes.data, _address(A, g, s, n, c0), _ONE)
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
                                _set_scaled(_address(entering[b, g, r, s], t // CHUNK, block, n, 0), h[n].ctypes.data, _ONE)
                        pos = index[g, r, t]
                        if t + AHEAD < length:
                            ahead = index[g, r, t + AHEAD]
                            _prefetch(_address(u, b, gu, ahead, off + c0))
                            _prefetch(_address(y, b, gy, ahead, off + c0))
                        _set_scaled(u_t.ctypes.data, _address(u, b, gu, pos, off + c0), _ONE)
                        _set_scaled(dt_t.ctypes.data, dt_g[pos].ctypes.data, _ONE)
                        _set_product(drive.ctypes.data, dt_t.ctypes.data, u_t.ctypes.data)
                        _set_product(acc.ctypes.data, skip.ctypes.data, u_t.ctypes.data)
                        for n in range(PASS):
                            b_n, c_n = B[b, g, pos, s, n], C[b, g, pos, s, n]
                            for j in range(LANES):
                                h_n = _exp(dt_t[j] * a[n, j]) * h[n, j] + drive[j] * b_n
                                h[n, j] = h_n
                                acc[j] += h_n * c_n
                        if first:
                            _set_scaled(_address(y, b, gy, pos, off + c0), acc.ctypes.data, w)
                        else:
                            _add_scaled(_address(y, b, gy, pos, off + c0), acc.ctypes.data, w)
                    for n in range(PASS):
                        _set_scaled(_address(last[b, g], r, s, n, c0), h[n].ctypes.data, _ONE)


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
    _whole_vectors()
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
    adjoints = _heap_rows(blocks * PASS).reshape((blocks, PASS, LANES))  # each block's, between chunks
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
                    _fill(adjoints[first_block:end_block], _ZERO)
                    for chunk in range(chunks - 1, -1, -1):
                        first = chunk * CHUNK
                        steps = min(CHUNK, length - first)
                        _fill(lanes_b, _ZERO)
                        _fill(lanes_c, _ZERO)
                        for block in range(first_block, end_block):
                            c0 = block * LANES
                            _set_scaled(skip.ctypes.data, D[g, c0:].ctypes.data, _ONE if s == 0 else _ZERO)
                            _fill(grad_b, _ZERO)
                            _fill(grad_d, _ZERO)
                            _fill(grad_a, _ZERO)
                            for n in range(PASS):
                                _set_scaled(a[n].ctypes.data, _address(A, g, s, n, c0), _ONE)
                                _set_scaled(adjoint[n].ctypes.data, adjoints[block, n].ctypes.data, _ONE)
                                _set_scaled(h[n].ctypes.data, entering[b, g, r, s, chunk, block, n].ctypes.data, _ONE)
                            for k in range(steps):  # the chunk's inputs, in loops of their own to vectorise
                                pos = order[first + k]
                                if chunk:  # this block's rows of the next chunk, meanwhile
                                    ahead = order[first - CHUNK + k]
                                    _prefetch(_address(delta, b, gd, ahead, off + c0))
                                    _prefetch(_address(u, b, gu, ahead, off + c0))
                                    _prefetch(_address(grad_y, b, gy_g, ahead, off + c0))
                                _set_scaled(dts[k].ctypes.data, bias[g, c0:].ctypes.data, _ONE)
                                _add_scaled(dts[k].ctypes.data, _address(delta, b, gd, pos, off + c0), _ONE)
                                _set_scaled(u_c[k].ctypes.data, _address(u, b, gu, pos, off + c0), _ONE)
                                _set_scaled(gy_c[k].ctypes.data, _address(grad_y, b, gy_g, pos, off + c0), w)
                            if softplus:
                                for k in range(steps):
                                    for j in range(LANES):
                                        slopes[k, j] = _sigmoid(dts[k, j])
                                        dts[k, j] = _softplus(dts[k, j])
                            else:
                                _fill(slopes, _ONE)
                            for k in range(steps):  # per-step vectors
                                _set_product(drive_c[k].ctypes.data, dts[k].ctypes.data, u_c[k].ctypes.data)
                            _fill(via_decay, _ZERO)
                            _fill(via_drive, _ZERO)
                            for k in range(steps):  # recompute the chunk's states
                                pos = order[first + k]
                                if restart[first + k]:
                                    for n in range(PASS):
                                        for j in range(LANES):
                                            h[n, j] = _ZERO
                                for n in range(PASS):
                                    b_n = B[b, g, pos, s, n]
                                    for j in range(LANES):
                                        decay = _exp(dts[k, j] * a[n, j])
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
                                _add_product(via_decay[k].ctypes.data, via_drive[k].ctypes.data, u_c[k].ctypes.data)
                                _set_product(via_decay[k].ctypes.data, via_decay[k].ctypes.data, slopes[k].ctypes.data)
                                _set_product(via_drive[k].ctypes.data, via_drive[k].ctypes.data, dts[k].ctypes.data)
                            for k in range(steps):
                                _add_product(via_drive[k].ctypes.data, gy_c[k].ctypes.data, skip.ctypes.data)
                                _add_scaled(grad_b.ctypes.data, via_decay[k].ctypes.data, _ONE)
                                _add_product(grad_d.ctypes.data, gy_c[k].ctypes.data, u_c[k].ctypes.data)
                            for k in range(steps):  # now dL/d(delta_t) and dL/d(u_t)
                                pos = order[first + k]
                                row = _address(grad_delta, b, gd, pos, off + c0)
                                if first_delta:
                                    _set_scaled(row, via_decay[k].ctypes.data, _ONE)
                                else:
                                    _add_scaled(row, via_decay[k].ctypes.data, _ONE)
                                row = _address(grad_u, b, gu, pos, off + c0)
                                if first_u:
                                    _set_scaled(row, via_drive[k].ctypes.data, _ONE)
                                else:
                                    _add_scaled(row, via_drive[k].ctypes.data, _ONE)
                            _add_scaled(grad_bias[b, g, c0:].ctypes.data, grad_b.ctypes.data, _ONE)
                            if s == 0:
                                _add_scaled(grad_D[b, g, c0:].ctypes.data, grad_d.ctypes.data, _ONE)
                            for n in range(PASS):
                                _set_scaled(adjoints[block, n].ctypes.data, adjoint[n].ctypes.data, _ONE)
                                _add_scaled(_address(grad_A[b], g, s, n, c0), grad_a[n].ctypes.data, _ONE)
                        for k in range(steps):  # the channel sums, once per chunk
                            pos = order[first + k]
                            _add_row_sums(lanes_b[k].ctypes.data, grad_B[b, g, part, pos, s].ctypes.data)
                            _add_row_sums(lanes_c[k].ctypes.data, grad_C[b, g, part, pos, s].ctypes.data)


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


@numba.njit(parallel=True, **_JIT)
def _forward_runs(runs, u, delta, bias, A, B, C, D, softplus, index, starts, weight, y, entering, last):
    """:func:`_forward` over runs (threads, 2) of tasks [first, end), one run a thread."""
    for i in prange(runs.shape[0]):
        _forward((runs[i, 0], runs[i, 1]), u, delta, bias, A, B, C, D, softplus, index, starts, weight, y,
                 entering, last)


@numba.njit(parallel=True, **_JIT)
def _backward_runs(runs, u, delta, bias, A, B, C, D, softplus, index, starts, weight, parts, entering, grad_y,
                   grad_u, grad_delta, grad_bias, grad_A, grad_B, grad_C, grad_D):
    """:func:`_backward` over runs (threads, 2) of tasks [first, end), one run a thread."""
    for i in prange(runs.shape[0]):
        _backward((runs[i, 0], runs[i, 1]), u, delta, bias, A, B, C, D, softplus, index, starts, weight, parts,
                  entering, grad_y, grad_u, grad_delta, grad_bias, grad_A, grad_B, grad_C, grad_D)


@functools.cache
def _start_numba_threads() -> None:
    """Start numba's threads once, keeping torch's thread count: starting its OpenMP layer sets
    OpenMP's thread count, which torch reads, to numba's NUMBA_NUM_THREADS (all cores), so a
    ``torch.set_num_threads(1)`` made before the first scan was undone by it."""
    threads = torch.get_num_threads()
    numba.get_num_threads()  # starts the threads
    torch.set_num_threads(threads)


def _run_tasks(launcher, tasks: int, *args: Tensor | bool | int) -> None:
    """Run tasks 0..tasks-1 through ``launcher`` (``_forward_runs``, ``_backward_runs``) on ``args``
    (tensors passed as NumPy views), in even runs, one for each of the threads torch uses
    (``torch.set_num_threads``). Numba's parallel loops take their threads from the OpenMP runtime
    torch uses (its "omp" layer, put first above), so the two share one pool of threads."""
    _start_numba_threads()
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS, tasks))
    numba.set_num_threads(threads)
    bounds = np.arange(threads + 1) * tasks // threads
    arrays = [x.numpy() if isinstance(x, Tensor) else x for x in args]
    launcher(np.stack([bounds[:-1], bounds[1:]], axis=1), *arrays)


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
        _run_tasks(
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
        _run_tasks(
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

"""LLVM building blocks for numba kernels that move 16-float32 rows as whole vectors.

numba compiles loops over a row's 16 channels as it likes: LLVM unrolled them and vectorised the
loop around them instead, with gathers and scatters, or left them scalar. The intrinsics here
write the LLVM IR of a row operation directly (one load or two, a multiply or fused multiply-add,
a store), give kernels stack arrays LLVM may keep in registers, sum a 16 x 16 block's rows by a
transpose-and-add tree, prefetch, and ask for whole 512-bit vectors. Rows are passed as int64
addresses (``array.ctypes.data``, :func:`address`). Used by ``ssmad.ops.scan_numba``.

``JIT`` are the options every kernel and helper is compiled with; :func:`njit_noalias` compiles a
kernel whose array arguments never alias; :func:`cache_keyed_on` makes a cached kernel recompile
when a module it inlines from changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic

LANES = 16  # float32 per vector row: 512 bits
# fastmath without reassociation: the rounding trick in numba_math.exp_f32 must not be folded away.
JIT = dict(fastmath={"nnan", "ninf", "nsz", "arcp", "contract", "afn"}, error_model="numpy", cache=True)


@intrinsic
def float32_bits(typingctx, x):
    """The bits of a float32 as an int32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def bits_float32(typingctx, bits):
    """An int32's bits as a float32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def stack_float32(typingctx, size):
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


@numba.njit(inline="always", **JIT)
def heap_rows(rows):
    """An uninitialised (rows, 16) float32 heap array starting on a cache line (malloc gives 16 or
    32 bytes of alignment, and a vector straddling two lines loads slower)."""
    flat = np.empty((rows + 1) * LANES, dtype=np.float32)
    skip = -(flat.ctypes.data // 4) % LANES
    return flat[skip : skip + rows * LANES].reshape((rows, LANES))


@numba.njit(inline="always", **JIT)
def fill(x, value):
    """x[...] = value for a C-contiguous array, as one loop that becomes vector stores. numba's slice
    assignment (x[:] = value) walks the strides, which LLVM made 8-float scatters: 2048 of them
    per chunk for the scan backward's lane buffers."""
    flat = x.reshape(x.size)
    for i in range(flat.size):
        flat[i] = value


@numba.njit(inline="always", **JIT)
def address(x, i, j, k, m):
    """The address of x[i, j, k, m] of a 4-D array, as an int64."""
    return x.ctypes.data + i * x.strides[0] + j * x.strides[1] + k * x.strides[2] + m * x.strides[3]


@intrinsic
def add_row_sums(typingctx, block, out):
    """out[0:16] += the 16 row sums of the 16 x 16 float32 block at address ``block`` (addresses as
    int64), by a transpose-and-add tree: 15 vector additions and 30 shuffles for 256 numbers, where
    a sum per row is 15 additions in sequence (LLVM may not reassociate them: see ``JIT``)."""
    def codegen(context, builder, signature, args):
        vector, mask = ir.VectorType(ir.FloatType(), LANES), ir.VectorType(ir.IntType(32), LANES)
        source = builder.inttoptr(args[0], vector.as_pointer())
        target = builder.inttoptr(args[1], vector.as_pointer())
        rows = [builder.load(builder.gep(source, [ir.Constant(ir.IntType(64), n)]), align=4) for n in range(LANES)]
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
    an int64 address. One vector load or two, a multiply or FMA, and a store."""
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


set_scaled = _row_intrinsic("set_scaled", accumulate=False, by_row=False)  # target = scale * source
add_scaled = _row_intrinsic("add_scaled", accumulate=True, by_row=False)  # target += scale * source
set_product = _row_intrinsic("set_product", accumulate=False, by_row=True)  # target = x * y
add_product = _row_intrinsic("add_product", accumulate=True, by_row=True)  # target += x * y


@intrinsic
def prefetch(typingctx, address):
    """Ask the CPU to bring the cache line at ``address`` (an int64) into its caches (LLVM's
    llvm.prefetch): a hint, never a fault. For rows a page or more apart, where the CPU's own
    prefetchers stop."""
    def codegen(context, builder, signature, args):
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        kind = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        llvm_prefetch = cgutils.get_or_insert_function(builder.module, kind, "llvm.prefetch.p0")
        read, keep, data = ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)  # keep: in every cache level
        builder.call(llvm_prefetch, [builder.inttoptr(args[0], byte_pointer), read, keep, data])
        return context.get_dummy_value()

    return types.void(types.int64), codegen


@intrinsic
def whole_vectors(typingctx):
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


def njit_noalias(function: Callable) -> Dispatcher:
    """numba.njit(**JIT), compiled with every array argument declared not to alias another, which
    numba's parallel loops declare for their bodies and njit offers no option for (through the
    dispatcher's flags hook: were it gone, only speed would suffer). Without it the scan forward ran
    1.6-1.7x slower at (1, 4x256, 1024). Callers must pass distinct output buffers."""
    dispatcher = numba.njit(**JIT)(function)
    dispatcher._customize_flags = _declare_noalias
    return dispatcher


def cache_keyed_on(dispatcher: Dispatcher, *modules: ModuleType) -> Dispatcher:
    """Make ``dispatcher``'s on-disk cache (``cache=True``) valid only while ``modules``' source
    files are unchanged too. numba checks only the file the function is defined in, so a cached
    kernel would keep the old code of a helper inlined from another file after that file changed
    (through the index file's source stamp: were it gone, only such edits would go unnoticed)."""
    cache_file = dispatcher._cache._cache_file
    digests = tuple(hashlib.sha256(Path(module.__file__).read_bytes()).digest() for module in modules)
    cache_file._source_stamp = (cache_file._source_stamp, *digests)
    return dispatcher

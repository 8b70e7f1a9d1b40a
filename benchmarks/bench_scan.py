"""Selective-scan speed on the decoder's shapes: median ms of forward and forward+backward per backend.

Shapes are those of the SS2D scans at 256x256 input (4 directions x d_inner channels at
L = H*W): 4x1024@64, 4x512@256, 4x256@1024, 4x128@4096, batch 1 and 8 (16 on CUDA), N = 16,
with D, delta_bias and softplus as the decoder calls it. Throughput is in state updates per
second, batch*dim*N*L / time. The backward is that of a fixed dense gradient in y's layout, as the
next layer hands it back (``y.backward(g)``; a ``y.sum()`` loss would also time copying its
expanded gradient, 64 MB at (8, 4x128, 4096)). Every row of the device's fastest backend gives
its speed as a ratio to the "torch" backend and, on CUDA, to "baseline": the PyTorch block scan
SS2D ran on GPUs before the routed scan (``baseline_ss2d.py``). Freed memory is kept for reuse,
as the ``ssmad`` command runs (``ssmad.engine.memory``); ``--fresh-memory`` measures glibc's
default instead, where every fresh 64 MB output is first mapped and zeroed page by page. Timings on
a shared machine are noisy: compare runs made together.

    python benchmarks/bench_scan.py            # every shape, every backend
    python benchmarks/bench_scan.py --quick    # the two acceptance shapes only
    python benchmarks/bench_scan.py --quick --threads 1 --layout dim-major
    python benchmarks/bench_scan.py --quick --fresh-memory
    python benchmarks/bench_scan.py --quick --device cuda [--dtype bfloat16]
"""

import argparse
import statistics
import time

import torch

from baseline_ss2d import selective_scan_baseline
from ssmad.engine.memory import keep_freed_memory
from ssmad.ops import available_backends, selective_scan

DECODER_SHAPES = [(4 * 1024, 64), (4 * 512, 256), (4 * 256, 1024), (4 * 128, 4096)]  # (dim, L)
QUICK_SHAPES = {"cpu": [(8, 4 * 128, 4096), (1, 4 * 256, 1024)], "cuda": [(16, 4 * 128, 4096), (16, 4 * 512, 256)]}
BATCHES = {"cpu": (1, 8), "cuda": (16,)}
STATE = 16
GROUPS = 4
REFERENCE_MAX_LENGTH = 256  # the Python-loop reference is minutes per call beyond this


def make_inputs(
    batch: int, dim: int, length: int, device: str, layout: str = "channels-last", dtype: torch.dtype = torch.float32
) -> dict:
    """Decoder-like scan arguments: u, delta (batch, dim, L), B, C (batch, 4, N, L) in ``dtype``,
    A (dim, N), D, delta_bias (dim,) in float32.

    ``layout``: u and delta as transposed views of (batch, L, dim) tensors ("channels-last", as SS2D
    makes them) or dense (batch, dim, L) tensors ("dim-major")."""
    gen = torch.Generator().manual_seed(0)

    def sequence(shift: float = 0.0) -> torch.Tensor:
        if layout == "channels-last":
            return (torch.randn(batch, length, dim, generator=gen) + shift).transpose(1, 2)
        return torch.randn(batch, dim, length, generator=gen) + shift

    inputs = {
        "u": sequence(),
        "delta": sequence(-4.0),
        "A": -torch.arange(1, STATE + 1, dtype=torch.float32).repeat(dim, 1),
        "B": torch.randn(batch, GROUPS, STATE, length, generator=gen),
        "C": torch.randn(batch, GROUPS, STATE, length, generator=gen),
        "D": torch.ones(dim),
        "delta_bias": torch.rand(dim, generator=gen) - 3.0,
    }
    sequences = ("u", "delta", "B", "C")
    return {k: v.to(device, dtype if k in sequences else torch.float32).requires_grad_() for k, v in inputs.items()}


def median_seconds(fn, repeats: int, device: str) -> float:
    fn()  # warm-up (and JIT compilation)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(batch: int, dim: int, length: int, backend: str, repeats: int, device: str, layout: str,
          dtype: torch.dtype) -> tuple[float, float]:
    inputs = make_inputs(batch, dim, length, device, layout, dtype)

    def scan() -> torch.Tensor:
        if backend == "baseline":
            return selective_scan_baseline(**inputs)
        return selective_scan(**inputs, delta_softplus=True, backend=backend)

    def forward():
        with torch.no_grad():
            scan()

    with torch.no_grad():
        grad = torch.randn_like(scan())  # a dense upstream gradient in the output's layout, as a layer gives

    def forward_backward():
        for x in inputs.values():
            x.grad = None  # as after optimizer.zero_grad(): no accumulation into earlier gradients timed
        scan().backward(grad)

    return median_seconds(forward, repeats, device), median_seconds(forward_backward, repeats, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the two acceptance shapes only")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="of u, delta, B and C (the state is float32 in every backend)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, which the numba kernel follows")
    parser.add_argument("--layout", choices=("channels-last", "dim-major"), default="channels-last",
                        help="u and delta as SS2D makes them (channels-last, default) or dense (batch, dim, L)")
    parser.add_argument("--backends", nargs="*", help="default: every backend available on the device (+ baseline on CUDA)")
    parser.add_argument("--fresh-memory", action="store_true",
                        help="glibc's default: large freed blocks handed back to the system, every large tensor "
                             "fresh pages (default: freed memory kept for reuse, as the ssmad command runs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    memory = "fresh (glibc default)" if args.fresh_memory or not keep_freed_memory() else "freed memory kept"
    dtype = getattr(torch, args.dtype)
    shapes = QUICK_SHAPES[args.device] if args.quick else [
        (b, d, n) for b in BATCHES[args.device] for d, n in DECODER_SHAPES
    ]
    backends = args.backends or available_backends(args.device) + (["baseline"] if args.device == "cuda" else [])
    fastest = backends[0]  # the device's own kernel (numba on CPU, triton or mamba_ssm on CUDA)
    against = [name for name in ("torch", "baseline") if name in backends and name != fastest]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, N = {STATE}, "
          f"G = {GROUPS}, layout {args.layout}, {args.dtype} inputs, median of {args.repeats}, memory: {memory}")
    ratios = " ".join(f"{f'{fastest}/{name}':>16}" for name in against)
    header = (f"{'batch':>5} {'dim':>9} {'L':>5} {'backend':>9} | {'fwd ms':>9} {'G upd/s':>7} | "
              f"{'fwd+bwd ms':>10} {'G upd/s':>7} | {ratios}")
    print(header)
    print("-" * len(header))
    skipped = False
    for batch, dim, length in shapes:
        updates = batch * dim * STATE * length
        times = {}
        for backend in backends:
            if backend == "reference" and length > REFERENCE_MAX_LENGTH:
                skipped = True
                continue
            times[backend] = bench(batch, dim, length, backend, args.repeats, args.device, args.layout, dtype)
        for backend in backends:
            label = f"{batch:>5} {f'4x{dim // 4}':>9} {length:>5} {backend:>9} |"
            if backend not in times:
                print(f"{label} {'skipped (too slow)':>38}")
                continue
            fwd, both = times[backend]
            ratio = ""
            if backend == fastest:
                ratio = " ".join(f"{times[name][0] / fwd:7.1f}x {times[name][1] / both:7.1f}x" for name in against)
            print(f"{label} {fwd * 1e3:9.1f} {updates / fwd / 1e9:7.3f} | {both * 1e3:10.1f} {updates / both / 1e9:7.3f} |"
                  f" {ratio}", flush=True)
    print(f"{fastest}/X: how many times faster than backend X, forward and forward+backward.")
    if skipped:
        print(f"reference: run only for L <= {REFERENCE_MAX_LENGTH} (a Python loop over L).")


if __name__ == "__main__":
    main()

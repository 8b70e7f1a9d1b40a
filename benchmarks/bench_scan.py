"""Selective-scan speed on the decoder's shapes: median ms of forward and forward+backward per backend.

Shapes are those of the SS2D scans at 256x256 input (4 directions x d_inner channels at
L = H*W): 4x1024@64, 4x512@256, 4x256@1024, 4x128@4096, batch 1 and 8, N = 16, with D,
delta_bias and softplus as the decoder calls it. Throughput is in state updates per second,
batch*dim*N*L / time. Timings on a shared machine are noisy: compare runs made together.

    python benchmarks/bench_scan.py            # every shape, every backend
    python benchmarks/bench_scan.py --quick    # the two acceptance shapes only
    python benchmarks/bench_scan.py --quick --threads 1 --layout dim-major
"""

import argparse
import statistics
import time

import torch

from ssmad.ops import available_backends, selective_scan

DECODER_SHAPES = [(4 * 1024, 64), (4 * 512, 256), (4 * 256, 1024), (4 * 128, 4096)]  # (dim, L)
QUICK_SHAPES = [(8, 4 * 128, 4096), (1, 4 * 256, 1024)]  # (batch, dim, L)
STATE = 16
GROUPS = 4
REFERENCE_MAX_LENGTH = 256  # the Python-loop reference is minutes per call beyond this


def make_inputs(batch: int, dim: int, length: int, device: str, layout: str = "channels-last") -> dict:
    """Decoder-like scan arguments: u, delta (batch, dim, L), B, C (batch, 4, N, L), A (dim, N).

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
    return {k: v.to(device).requires_grad_() for k, v in inputs.items()}


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


def bench(batch: int, dim: int, length: int, backend: str, repeats: int, device: str, layout: str) -> tuple[float, float]:
    inputs = make_inputs(batch, dim, length, device, layout)

    def forward():
        with torch.no_grad():
            selective_scan(**inputs, delta_softplus=True, backend=backend)

    def forward_backward():
        selective_scan(**inputs, delta_softplus=True, backend=backend).sum().backward()

    return median_seconds(forward, repeats, device), median_seconds(forward_backward, repeats, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only (8, 4x128, 4096) and (1, 4x256, 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, which the numba kernel follows")
    parser.add_argument("--layout", choices=("channels-last", "dim-major"), default="channels-last",
                        help="u and delta as SS2D makes them (channels-last, default) or dense (batch, dim, L)")
    parser.add_argument("--backends", nargs="*", help="default: every backend available on the device")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = QUICK_SHAPES if args.quick else [(b, d, n) for b in (1, 8) for d, n in DECODER_SHAPES]
    backends = args.backends or available_backends(args.device)
    fastest = backends[0]  # the device's own kernel (numba on CPU); every row gives it as a ratio to "torch"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, N = {STATE}, "
          f"G = {GROUPS}, layout {args.layout}, median of {args.repeats}")
    header = (f"{'batch':>5} {'dim':>9} {'L':>5} {'backend':>9} | {'fwd ms':>9} {'G upd/s':>7} | "
              f"{'fwd+bwd ms':>10} {'G upd/s':>7} | {f'{fastest}/torch':>12}")
    print(header)
    print("-" * len(header))
    skipped = False
    for batch, dim, length in shapes:
        updates = batch * dim * STATE * length
        times = {}
        for backend in backends:
            label = f"{batch:>5} {f'4x{dim // 4}':>9} {length:>5} {backend:>9} |"
            if backend == "reference" and length > REFERENCE_MAX_LENGTH:
                print(f"{label} {'skipped (too slow)':>38}")
                skipped = True
                continue
            fwd, both = times[backend] = bench(batch, dim, length, backend, args.repeats, args.device, args.layout)
            ratio = ""
            if backend == fastest and "torch" in backends:
                torch_fwd, torch_both = times["torch"] = bench(
                    batch, dim, length, "torch", args.repeats, args.device, args.layout
                )
                ratio = f"{torch_fwd / fwd:5.1f}x {torch_both / both:5.1f}x"
            if backend == "torch" and fastest != "torch":
                fwd, both = times["torch"]
            print(f"{label} {fwd * 1e3:9.1f} {updates / fwd / 1e9:7.3f} | {both * 1e3:10.1f} {updates / both / 1e9:7.3f} |"
                  f" {ratio:>12}", flush=True)
    print(f"{fastest}/torch: how many times faster than the torch backend, forward and forward+backward.")
    if skipped:
        print(f"reference: run only for L <= {REFERENCE_MAX_LENGTH} (a Python loop over L).")


if __name__ == "__main__":
    main()

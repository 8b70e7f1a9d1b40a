"""Model benchmark: parameters, FLOPs and CPU forward and training throughput of the two presets.

    python benchmarks/bench_model.py [--quick] [--image-size 256] [--threads N] [--encoder resnet34] [--breakdown]
    python benchmarks/bench_model.py --device cuda [--quick] [--batch 16]

Prints, for ``mambaad`` and ``pyramid_mamba`` (ResNet34 widths unless --encoder, random encoder
weights): parameters of encoder / bottleneck / decoder; forward FLOPs per image; images/s at
batch 1 and 8 in float32 and bfloat16 autocast; the time the same FLOPs take as one large
float32 matrix product on this machine, with the ratio (goal: within 5x); and the training
step (bottleneck + decoder forward and backward and an AdamW step on cached encoder features)
in images/s at batch 4. ``--breakdown`` adds, for the training step and for an inference pass at batch 1
(encoder included), the share of the time spent in the scan forward, the scan backward, the
projections (in_proj / x_proj / dt_proj / out_proj and other matrix products), convolutions, norms
(LEC InstanceNorm, LayerNorm, BatchNorm), the encoder and the rest, from torch.profiler's self times.

``--paths`` (implied by ``--device cuda``) prints, per preset and per SS2D path, training steps/s
(cached encoder features) and inference images/s (encoder included) at ``--batch`` (default 16),
in float32 and bfloat16 autocast: the routed scan on the device's kernel (numba, triton) and on the
PyTorch backend, and the baseline, the path SS2D ran on GPUs before (``baseline_ss2d.py``: gathered
directions and a PyTorch block scan per pyramid level; with mamba_ssm's kernel as well when it is
importable), with the ratios to the baseline.

FLOPs: convolutions and linear layers are counted by forward hooks as 2 * multiply-adds;
the scan core is counted analytically per SS2D call on (n, D, h, w) maps with K directions,
N states, L = h*w and rank R: x_proj 2*n*K*(R+2N)*D*L, dt_proj 2*n*K*D*R*L and the selective
scan 9 flops per state update (dt*A, exp, dt*u, *B, decay*h + drive, *C, sum over N),
9*n*K*D*L*N per scanned map. On CPU one routed scan covers the P + 1 pyramid levels (the
projections once, the scan P + 1 times).
Normalisations, activations, gathers and the blur are not counted.
Timings on a machine shared with other processes are noisy: run it on an idle machine.
Freed memory is kept for reuse, as the ``ssmad`` command runs (``ssmad.engine.memory``);
``--fresh-memory`` measures glibc's default instead, every large tensor on fresh pages.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import nullcontext

import torch
from torch import nn

from baseline_ss2d import baseline_path
from ssmad.engine.memory import keep_freed_memory
from ssmad.models import build_model
from ssmad.modules.ss2d import SS2D
from ssmad.ops import available_backends


class FlopCounter:
    """Counts forward FLOPs of Conv2d / Linear (hooks) and of SS2D scan cores (wrapper)."""

    def __init__(self, model: nn.Module) -> None:
        self.flops = 0
        self.handles = []
        self.originals = {}
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                self.handles.append(module.register_forward_hook(self.count_layer))
            if isinstance(module, SS2D):
                self.wrap_scan_core(module)

    def count_layer(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            self.flops += 2 * output.numel() * module.in_features
        else:
            kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            self.flops += 2 * output.numel() * kernel

    def wrap_scan_core(self, ss2d: SS2D) -> None:
        self.originals[ss2d] = ("routed_scan",)
        ss2d.routed_scan = self.counted(ss2d, ss2d.routed_scan, ss2d.pyramid_levels + 1)

    def counted(self, ss2d: SS2D, original, scans: int):
        def run(x: torch.Tensor) -> torch.Tensor:
            n, d_inner, height, width = x.shape
            K, N, R, L = ss2d.num_directions, ss2d.d_state, ss2d.dt_rank, height * width
            self.flops += 2 * n * K * (R + 2 * N) * d_inner * L + 2 * n * K * d_inner * R * L
            self.flops += 9 * n * K * d_inner * L * N * scans
            return original(x)

        return run

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        for ss2d, methods in self.originals.items():
            for method in methods:
                delattr(ss2d, method)  # back to the class methods


def forward_flops(model: nn.Module, image_size: int) -> int:
    """FLOPs of one forward pass of one image."""
    counter = FlopCounter(model)
    with torch.no_grad():
        model(torch.randn(1, 3, image_size, image_size))
    counter.remove()
    return counter.flops


def matmul_flops_per_second(seconds: float = 2.0, size: int = 2048) -> float:
    """Float32 throughput of a large square matrix product on this machine."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start)


def images_per_second(model: nn.Module, batch: int, image_size: int, bfloat16: bool, repeats: int) -> float:
    """Forward throughput (best of ``repeats`` after two warm-up runs)."""
    images = torch.randn(batch, 3, image_size, image_size)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bfloat16 else nullcontext()
    best = float("inf")
    with torch.no_grad(), autocast:
        for _ in range(2):
            model(images)
        for _ in range(repeats):
            start = time.perf_counter()
            model(images)
            best = min(best, time.perf_counter() - start)
    return batch / best


def training_step(model: nn.Module, batch: int, image_size: int, device: str = "cpu", bfloat16: bool = False):
    """A function running one training step (bottleneck + decoder forward, backward, AdamW) on
    encoder features cached once; the model is left in train mode."""
    with torch.no_grad():
        features = model.encode(torch.randn(batch, 3, image_size, image_size, device=device))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device, dtype=torch.bfloat16) if bfloat16 else nullcontext()
    model.train()

    def step() -> None:
        with autocast:
            loss = model.loss(features, model.decode(features))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def train_images_per_second(model: nn.Module, batch: int, image_size: int, repeats: int) -> float:
    """Training-step throughput on cached encoder features (best of ``repeats`` after a warm-up)."""
    step = training_step(model, batch, image_size)
    best = float("inf")
    for run in range(repeats + 1):
        start = time.perf_counter()
        step()
        if run:
            best = min(best, time.perf_counter() - start)
    model.eval()
    return batch / best


SCAN_FUNCTIONS = ("_RoutedScan",)  # the numba scan's autograd function: forward and backward events
CATEGORIES = {  # torch.profiler event name -> category, by prefix
    "projections": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::linear", "aten::matmul"),
    "convolutions": ("aten::convolution", "aten::_convolution", "aten::mkldnn_convolution", "aten::conv",
                     "aten::thnn_conv", "aten::_slow_conv", "aten::convolution_backward"),
    "norms": ("aten::native_layer_norm", "aten::layer_norm", "aten::instance_norm", "aten::batch_norm",
              "aten::native_batch_norm", "aten::_native_batch_norm", "aten::native_layer_norm_backward",
              "aten::native_batch_norm_backward"),
}


def category(name: str) -> str:
    if name.startswith(SCAN_FUNCTIONS):
        return "scan backward" if "Backward" in name else "scan forward"
    for label, prefixes in CATEGORIES.items():
        if name.startswith(prefixes):
            return label
    return "rest"


def breakdown(fn, extra: dict[str, float] | None = None) -> str:
    """Shares of ``fn()``'s self CPU time by category (one profiled run after a warm-up)."""
    fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    totals: dict[str, float] = dict(extra or {})
    for event in prof.key_averages():
        label = category(event.key)
        totals[label] = totals.get(label, 0.0) + event.self_cpu_time_total / 1e6
    whole = sum(totals.values())
    order = ("encoder", "scan forward", "scan backward", "projections", "convolutions", "norms", "rest")
    return f"{whole:.2f} s: " + ", ".join(f"{k} {100 * totals[k] / whole:.0f} %" for k in order if k in totals)


def training_breakdown(model: nn.Module, batch: int, image_size: int) -> str:
    result = breakdown(training_step(model, batch, image_size))
    model.eval()
    return result


def inference_breakdown(model: nn.Module, image_size: int) -> str:
    images = torch.randn(1, 3, image_size, image_size)
    with torch.no_grad():
        model.encode(images)
        start = time.perf_counter()
        features = model.encode(images)
        encoder = time.perf_counter() - start
        size = (image_size, image_size)
        return breakdown(lambda: model.anomaly_map_from_features(features, model.decode(features), size),
                         {"encoder": encoder})


def seconds(fn, repeats: int, device: str) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs after a warm-up (synchronised on a GPU)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def scan_paths(device: str) -> list[tuple[str, str | None, str | None]]:
    """(label, scan backend, baseline scan) of each SS2D path measured on ``device``."""
    kernels = [name for name in available_backends(device) if name in ("numba", "triton")]
    paths = [(f"routed {name}", name, None) for name in kernels] + [("routed torch", "torch", None), ("baseline", None, "block")]
    if "mamba_ssm" in available_backends(device):
        paths.append(("baseline mamba_ssm", None, "mamba_ssm"))
    return paths


def paths_report(args: argparse.Namespace, device: str, memory: str) -> None:
    """Training steps/s and inference images/s per preset, SS2D path and precision on ``device``."""
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, image {args.image_size}x{args.image_size}, "
          f"encoder {args.encoder}, batch {args.batch}, memory: {memory}")
    repeats = 2 if args.quick else 5
    for preset in ("mambaad", "pyramid_mamba"):
        torch.manual_seed(0)
        model = build_model(preset, encoder=args.encoder, encoder_weights="random").to(device)
        images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
        print(f"\n{preset}:")
        results = {}
        for label, backend, scan in scan_paths(device):
            os.environ["SSMAD_SCAN_BACKEND"] = backend or "auto"
            for bfloat16 in (False, True):
                autocast = torch.autocast(device, dtype=torch.bfloat16) if bfloat16 else nullcontext()
                with baseline_path(model, scan) if scan else nullcontext():
                    step = training_step(model, args.batch, args.image_size, device, bfloat16)
                    train = 1 / seconds(step, repeats, device)
                    model.eval()
                    with torch.no_grad(), autocast:
                        infer = args.batch / seconds(lambda: model(images), repeats, device)
                results[label, bfloat16] = (train, infer)
        os.environ.pop("SSMAD_SCAN_BACKEND")
        for (label, bfloat16), (train, infer) in results.items():
            base_train, base_infer = results["baseline", bfloat16]
            dtype = "bf16-autocast" if bfloat16 else "float32"
            print(f"  {label:20s} {dtype:13s}: training {train:7.2f} steps/s, inference {infer:8.1f} images/s"
                  f"  ({train / base_train:6.1f}x / {infer / base_infer:6.1f}x baseline)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 only, one timed run, float32 only")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--encoder", default="resnet34", help="encoder architecture (default resnet34, the papers')")
    parser.add_argument("--breakdown", action="store_true", help="where the time goes (torch.profiler)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda implies --paths")
    parser.add_argument("--paths", action="store_true", help="training and inference per SS2D path (see above)")
    parser.add_argument("--batch", type=int, default=16, help="batch of the --paths figures")
    parser.add_argument("--fresh-memory", action="store_true",
                        help="glibc's default: large freed blocks handed back to the system, every large tensor "
                             "fresh pages (default: freed memory kept for reuse, as the ssmad command runs)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    memory = "fresh (glibc default)" if args.fresh_memory or not keep_freed_memory() else "freed memory kept"
    if args.paths or args.device == "cuda":
        paths_report(args, args.device, memory)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, image {args.image_size}x{args.image_size}, "
          f"encoder {args.encoder}, memory: {memory}")
    rate = matmul_flops_per_second(1.0 if args.quick else 3.0)
    print(f"large float32 matmul: {rate / 1e9:.1f} GFLOP/s")
    batches = (1,) if args.quick else (1, 8)
    precisions = (False,) if args.quick else (False, True)
    repeats = 1 if args.quick else 3
    for preset in ("mambaad", "pyramid_mamba"):
        torch.manual_seed(0)
        model = build_model(preset, encoder=args.encoder, encoder_weights="random").eval()
        counts = model.parameter_counts()
        flops = forward_flops(model, args.image_size)
        print(f"\n{preset}: parameters " + ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in counts.items()))
        print(f"  forward {flops / 1e9:.2f} GFLOP/image = {flops / rate * 1e3:.1f} ms as one large matmul")
        for bfloat16 in precisions:
            for batch in batches:
                ips = images_per_second(model, batch, args.image_size, bfloat16, repeats)
                ratio = (1 / ips) / (flops / rate)
                dtype = "bf16-autocast" if bfloat16 else "float32"
                print(f"  batch {batch} {dtype:13s}: {ips:7.2f} images/s ({1e3 / ips:8.1f} ms/image, {ratio:5.1f}x matmul time)")
        ips = train_images_per_second(model, 4, args.image_size, repeats)
        print(f"  training step, batch 4, float32: {ips:7.2f} images/s ({4 / ips:6.2f} s/step)")
        if args.breakdown:
            print(f"  training step breakdown, {training_breakdown(model, 4, args.image_size)}")
            print(f"  inference breakdown (batch 1), {inference_breakdown(model, args.image_size)}")


if __name__ == "__main__":
    main()

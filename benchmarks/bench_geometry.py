"""How time and memory grow with the image: training step and inference at several input sizes,
and one multi-megapixel image scored in tiles.

    python benchmarks/bench_geometry.py [--sizes 256,512,1024,1248x512] [--presets mambaad,pyramid_mamba]
                                        [--batch 4] [--encoder resnet34] [--tiled 2048x2432 --tile 512]

Every (preset, size, measurement) runs in a fresh process, so that its peak memory is its own
(freed memory is kept for reuse, as the ``ssmad`` command runs, which holds a process's peak):
- training step: bottleneck + decoder forward and backward and an AdamW step on encoder features
  of random images (as ``bench_model.py``), at ``--batch`` (4), or batch 1 where 4 does not fit in
  ``--memory-gb``; median of ``--repeats`` steps after one warm-up;
- inference: batch 1, encoder included, median of ``--repeats`` after one warm-up;
- tiled: one image of ``--tiled`` (H x W) scored in ``--tile`` tiles with ``--tile-overlap``, tiles
  batched by ``--tile-batch``, and the map stitched (``ssmad.engine.tiling``).
Peak memory is the process's resident high-water mark (``VmHWM``) above its resident size
(``VmRSS``) just before the measured work (model built and features made).
Then, per preset and measurement, the exponent of a least-squares fit of log(time) and
log(memory) against log(pixels): 1 is linear. Random encoder weights; ResNet34 widths unless
--encoder. Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

import numpy as np
import torch


def _memory_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(kind: str, preset: str, size: tuple[int, int], args: argparse.Namespace) -> dict:
    """One measurement in this process (the child side)."""
    from ssmad.engine.memory import keep_freed_memory
    from ssmad.models import build_model

    keep_freed_memory()
    torch.manual_seed(0)
    model = build_model(preset, encoder=args.encoder, encoder_weights="random")
    if kind == "train":
        with torch.no_grad():
            features = model.encode(torch.randn(args.batch, 3, *size))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model.train()

        def run() -> None:
            loss = model.loss(features, model.decode(features))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    elif kind == "infer":
        model.eval()
        image = torch.randn(1, 3, *size)

        def run() -> None:
            model.anomaly_map(image)
    else:
        from ssmad.engine.scoring import TorchEngine
        from ssmad.engine.tiling import TileGrid, score_tiled

        engine = TorchEngine(model, torch.device("cpu"))
        grid = TileGrid(*size, args.tile, args.tile_overlap)
        image = torch.randn(3, *size)

        def run() -> None:
            score_tiled(engine, image, grid, args.tile_batch, model.config.image_score)
    baseline = _memory_kb("VmRSS")
    seconds = _median_seconds(run, args.repeats)
    peak = _memory_kb("VmHWM") - baseline
    return {"kind": kind, "preset": preset, "size": list(size), "batch": args.batch if kind == "train" else 1,
            "seconds": seconds, "peak_mb": peak / 1024}


def _child(kind: str, preset: str, size: tuple[int, int], args: argparse.Namespace, batch: int) -> dict | None:
    command = [sys.executable, __file__, "--child", kind, "--presets", preset, "--sizes", f"{size[0]}x{size[1]}",
               "--batch", str(batch), "--encoder", args.encoder, "--repeats", str(args.repeats),
               "--tile", str(args.tile), "--tile-overlap", str(args.tile_overlap), "--tile-batch", str(args.tile_batch)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"  {kind} {preset} {size}: failed (exit {done.returncode}) {done.stderr.strip()[-300:]}", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fits(preset: str, size: tuple[int, int], args: argparse.Namespace) -> bool:
    """Whether a training step at batch ``--batch`` stays under ``--memory-gb``, extrapolated from batch 1."""
    one = _child("train", preset, size, args, 1)
    return one is not None and one["peak_mb"] * args.batch < args.memory_gb * 1024


def _exponent(pixels: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.log(pixels), np.log(values), 1)[0]) if len(values) > 1 else math.nan


def _parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,512,1024,1248x512")
    parser.add_argument("--presets", default="mambaad,pyramid_mamba")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-gb", type=float, default=16.0, help="largest training peak allowed at --batch")
    parser.add_argument("--tiled", default="2048x2432", help="H x W of the tiled image ('' = skip)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--tile-overlap", type=int, default=64)
    parser.add_argument("--tile-batch", type=int, default=4)
    parser.add_argument("--child", choices=("train", "infer", "tiled"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [_parse_size(text) for text in args.sizes.split(",")]
    presets = args.presets.split(",")
    if args.child:
        print(json.dumps(measure(args.child, presets[0], sizes[0], args)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, encoder {args.encoder} (random weights)")
    print(f"{'preset':14} {'size':>10} {'pixels':>9} {'measure':>10} {'batch':>5} {'s/step|image':>13} {'ms/Mpx/img':>11} {'peak MB':>9}")
    for preset in presets:
        rows: dict[str, list[dict]] = {"train": [], "infer": []}
        for size in sizes:
            for kind in ("train", "infer"):
                batch = args.batch if kind == "infer" or _fits(preset, size, args) else 1
                row = _child(kind, preset, size, args, batch)
                if row is None:
                    continue
                rows[kind].append(row)
                pixels = size[0] * size[1]
                per_mpx = 1e3 * row["seconds"] / row["batch"] / (pixels / 1e6)
                print(f"{preset:14} {size[0]:>4}x{size[1]:<5} {pixels:>9} {kind:>10} {row['batch']:>5} "
                      f"{row['seconds']:>13.3f} {per_mpx:>11.1f} {row['peak_mb']:>9.0f}", flush=True)
        for kind, measured in rows.items():
            pixels = [r["size"][0] * r["size"][1] for r in measured]
            per_image = [r["seconds"] / r["batch"] for r in measured]
            memory = [r["peak_mb"] / r["batch"] for r in measured]
            print(f"{preset:14} {kind}: log-log exponent vs pixels, time {_exponent(pixels, per_image):.2f}, "
                  f"memory {_exponent(pixels, memory):.2f}")
        if args.tiled:
            size = _parse_size(args.tiled)
            row = _child("tiled", preset, size, args, 1)
            if row is not None:
                print(f"{preset:14} tiled {size[0]}x{size[1]} in {args.tile}-px tiles (overlap {args.tile_overlap}, "
                      f"batches of {args.tile_batch}): {row['seconds']:.2f} s, peak {row['peak_mb']:.0f} MB", flush=True)


if __name__ == "__main__":
    main()

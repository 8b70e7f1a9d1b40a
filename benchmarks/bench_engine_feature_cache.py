"""Feature cache speed-up: training epochs with encoder features cached in memory vs recomputed.

    python benchmarks/bench_engine_feature_cache.py [--image-size 128] [--epochs 2] [--full-decoder]

Prints seconds per epoch for --cache memory and --cache none on synthetic data (ResNet18, random
weights; encoder speed does not depend on the weights) and their ratio. Timings on a shared CPU
are noisy: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ssmad.data import make_synthetic
from ssmad.engine.train_config import TrainConfig
from ssmad.engine.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--full-decoder", action="store_true", help="the preset's decoder depths [3, 4, 6, 3]")
    args = parser.parse_args()
    overrides = {} if args.full_decoder else {"decoder_depths": [1, 1, 1, 1], "pyramid_levels": 1}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic(Path(tmp) / "data", classes=["wood"], num_train=18, num_test=0, image_size=args.image_size)
        seconds = {}
        for cache in ("memory", "none"):
            config = TrainConfig(
                data=str(data), out=str(Path(tmp) / cache), dataset="mvtec", image_size=str(args.image_size),
                encoder="resnet18", weights="random", epochs=args.epochs, batch_size=8, device="cpu",
                cache=cache, checkpoint_every=args.epochs, model_overrides=overrides,
            )
            started = time.perf_counter()
            result = Trainer(config).fit()
            total = time.perf_counter() - started
            seconds[cache] = result.train_seconds / args.epochs
            print(f"cache={cache}: caching {result.cache_seconds:.1f} s, {seconds[cache]:.2f} s/epoch, run {total:.1f} s")
    print(f"speed-up per epoch after caching: {seconds['none'] / seconds['memory']:.2f}x")


if __name__ == "__main__":
    main()

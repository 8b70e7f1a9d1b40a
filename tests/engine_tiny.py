"""A tiny synthetic dataset and model configuration: the shared run (conftest.tiny_run) and the tests
that train runs of their own are built from them."""

from __future__ import annotations

from pathlib import Path

from ssmad.data import make_synthetic
from ssmad.engine.train_config import TrainConfig

IMAGE_SIZE = 64
TINY_MODEL = {"decoder_depths": [1, 1, 1, 1], "pyramid_levels": 1}


def make_tiny_data(root: Path) -> Path:
    """Two synthetic classes, 6 training normals each (about 5 train + 1 val), 64 x 64 pixels."""
    return make_synthetic(root, classes=["wood", "nut"], num_train=6, num_test=6, image_size=IMAGE_SIZE, seed=0)


def tiny_config(data: Path, out: Path, **changes) -> TrainConfig:
    """A few-step CPU run of a shrunken Pyramid-Mamba with a random ResNet18 encoder."""
    values = dict(
        data=str(data), out=str(out), preset="pyramid_mamba", dataset="mvtec", image_size=str(IMAGE_SIZE),
        encoder="resnet18", weights="random", epochs=2, batch_size=4, device="cpu", checkpoint_every=1,
        model_overrides=dict(TINY_MODEL),
    )
    values.update(changes)
    return TrainConfig(**values)


def tiny_cli_args(data: Path, out: Path) -> list[str]:
    """``ssmad train`` arguments of the same tiny configuration."""
    return [
        "train", "--data", str(data), "--out", str(out), "--dataset", "mvtec", "--image-size", str(IMAGE_SIZE),
        "--encoder", "resnet18", "--weights", "random", "--batch-size", "4", "--device", "cpu",
        "--set", "decoder_depths=[1,1,1,1]", "--set", "pyramid_levels=1",
    ]

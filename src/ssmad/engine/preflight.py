"""Checks of a training run's settings and resources, made before any work is done.

A setting that can only fail at the end (calibration needs held-out normals, a target false-positive
rate in (0, 1)) or a resource that runs out half-way (disk for ``--cache disk``, RAM for
``--cache memory``) would otherwise cost the whole training time. Each check raises ``ValueError``
naming the flag and a valid value; the command line prints it as one line.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ssmad.data.geometry import Geometry
from ssmad.modules.encoder_base import FeatureEncoder

MEMORY_SHARE = 0.8  # --cache memory may use at most this share of the RAM available now


def check_settings(val_fraction: float, target_fpr: float) -> None:
    """Values checked before the model or the data are touched."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"--val-fraction {val_fraction:g}: calibration needs held-out normal images, so the fraction "
            "must be in (0, 1), e.g. --val-fraction 0.1"
        )
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"--target-fpr {target_fpr:g} must be in (0, 1), e.g. --target-fpr 0.01")


def check_out_folder(out: Path) -> None:
    """``out`` exists (created if needed) and a file can be written into it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise ValueError(
            f"--out {out}: cannot write there ({error.strerror or error}); choose a writable folder, "
            "e.g. --out runs/NAME"
        ) from error


def check_data(train_classes: list[str], val_classes: list[str], group_sizes: dict[str, int], batch_size: int, data: str) -> None:
    """Enough training images of every geometry for one batch (``group_sizes``: images per geometry,
    named by it and its classes) and at least one held-out normal per class."""
    for group, count in group_sizes.items():
        if count < batch_size:
            where = "" if len(group_sizes) == 1 else f" of geometry {group}"
            raise ValueError(
                f"{count} training images{where} under {data} but batch size {batch_size}: a batch holds "
                f"images of one geometry; use --batch-size {count} or fewer"
            )
    without = sorted(set(train_classes) - set(val_classes))
    if without:
        raise ValueError(
            f"class(es) {', '.join(without)} under {data} keep no held-out normal image for calibration: "
            "add training images, or raise --val-fraction (e.g. --val-fraction 0.2)"
        )


def feature_bytes(encoder: FeatureEncoder, geometries: list[Geometry]) -> int:
    """Bytes of float32 encoder features of images of ``geometries`` (one per image)."""
    return 4 * sum(
        info.channels * (geometry.height // info.stride) * (geometry.width // info.stride)
        for geometry in geometries for info in encoder.feature_info
    )


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def available_memory_bytes() -> int | None:
    """RAM available to new allocations (Linux ``MemAvailable``); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_cache(storage: str, needed: int, directory: Path) -> None:
    """Room for ``needed`` bytes of features where ``storage`` ("memory", "disk", "none") keeps them."""
    megabytes = needed / 1e6
    if storage == "disk":
        free = free_disk_bytes(directory)
        if needed > free:
            raise ValueError(
                f"--cache disk needs about {megabytes:.0f} MB in {directory} but {free / 1e6:.0f} MB are free: "
                "free some space, or use --cache none (the encoder then runs on every batch)"
            )
    elif storage == "memory":
        available = available_memory_bytes()
        if available is not None and needed > MEMORY_SHARE * available:
            raise ValueError(
                f"--cache memory needs about {megabytes:.0f} MB of RAM but {available / 1e6:.0f} MB are "
                "available: use --cache disk (memory-mapped files) or --cache none"
            )


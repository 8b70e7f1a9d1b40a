"""The dataset object and its factory: file lists -> samples of tensors.

Errors versus warnings (what a user would want):
- errors (nothing sensible to go on with): missing root or class folders, an unknown class
  name (the message lists the available ones), a class without training images, a test
  split with no test images, an anomalous test image without mask when
  `missing_mask="error"`, a corrupt or truncated file (raised when the sample is loaded,
  naming the file);
- warnings (the data are usable, the user should know): anomalous images without mask when
  `missing_mask="full"` (one warning with the count; the whole image counts as anomalous),
  a mask whose size differs from its image's (resized nearest-neighbour to the image, one
  warning per file, naming it).
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ssmad.data.image_io import read_image, read_mask
from ssmad.data.layouts import AUTO_KIND, DATASET_KINDS, Sample, detect_kind, read_class, resolve_classes
from ssmad.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTransform,
    resize_mask,
    resize_mask_nearest,
)

SPLITS = ("train", "val", "test")
DEFAULT_VAL_FRACTION = 0.1  # share of each class's training normals held out for calibration
MISSING_MASK_POLICIES = ("error", "full")


class AnomalyDataset(Dataset):
    """Samples of one or more classes; `dataset[i]` is a dict:

    - "image": float32 (3, H, W), resized and normalised;
    - "mask": float32 (1, H, W) in {0, 1} (zeros for normal images);
    - "label": int, 0 normal, 1 anomalous; "class_name": str; "path": str.
    """

    def __init__(self, samples: list[Sample], class_names: list[str], transform: ImageTransform) -> None:
        self.samples = samples
        self.class_names = class_names
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        """Label of every sample, in order."""
        return [sample.label for sample in self.samples]

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = read_image(sample.path)
        size_hw = self.transform.size_hw
        if sample.label == 0:
            mask = torch.zeros(1, *size_hw)
        elif sample.mask_path is None:
            mask = torch.ones(1, *size_hw)
        else:
            mask = resize_mask(self._mask_at_image_size(sample.mask_path, image.size), size_hw)
        return {
            "image": self.transform(image),
            "mask": mask,
            "label": sample.label,
            "class_name": sample.class_name,
            "path": str(sample.path),
        }

    @staticmethod
    def _mask_at_image_size(mask_path: Path, image_size_wh: tuple[int, int]) -> np.ndarray:
        """Boolean mask (h, w) of the image's own size; other sizes are resized with a warning."""
        mask = read_mask(mask_path)
        width, height = image_size_wh
        if mask.shape != (height, width):
            warnings.warn(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{width}x{height}; resized with nearest neighbour",
                stacklevel=3,
            )
            mask = resize_mask_nearest(mask, (height, width))
        return mask

    def __repr__(self) -> str:
        return (f"AnomalyDataset({len(self)} samples, classes={self.class_names}, "
                f"transform={self.transform})")


def split_validation(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(train, val) of one class's normals: a seeded random `val_fraction` held out.

    Deterministic for (files, seed, class name), independent of the other classes; both
    parts keep file-name order. round(fraction * n) images are held out, at least one when
    the fraction is positive and the class has two images or more.
    """
    count = len(samples)
    num_val = int(round(val_fraction * count))
    if val_fraction > 0 and count >= 2:
        num_val = min(max(num_val, 1), count - 1)
    class_key = zlib.crc32(samples[0].class_name.encode()) if samples else 0
    order = np.random.default_rng([seed, class_key]).permutation(count)
    held_out = set(order[:num_val].tolist())
    train = [sample for i, sample in enumerate(samples) if i not in held_out]
    val = [sample for i, sample in enumerate(samples) if i in held_out]
    return train, val


def _select_classes(available: dict[str, Path], classes: str | list[str] | None, root: Path, kind: str) -> list[str]:
    if not available:
        raise FileNotFoundError(
            f"no {kind} classes found under {root}; check the path and the dataset kind "
            f"(one of {', '.join(DATASET_KINDS)} or 'auto')"
        )
    if classes is None:
        return sorted(available)
    requested = [classes] if isinstance(classes, str) else list(classes)
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ValueError(
            f"unknown class(es) {unknown} in {root}; available: {', '.join(sorted(available))}"
        )
    return requested


def _apply_missing_mask_policy(test: list[Sample], missing_mask: str, root: Path) -> None:
    missing = [sample for sample in test if sample.label == 1 and sample.mask_path is None]
    if not missing:
        return
    if missing_mask == "error":
        raise FileNotFoundError(
            f"{len(missing)} anomalous test image(s) under {root} have no mask, e.g. "
            f"{missing[0].path}; add the masks, or pass missing_mask='full' to treat each such "
            "image as anomalous everywhere"
        )
    warnings.warn(
        f"{len(missing)} anomalous test image(s) under {root} have no mask (e.g. "
        f"{missing[0].path}); their whole image counts as anomalous (missing_mask='full')",
        stacklevel=3,
    )


def build_dataset(
    kind: str,
    root: str | Path,
    split: str,
    classes: str | list[str] | None = None,
    image_size: int | tuple[int, int] = 256,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    missing_mask: str = "error",
) -> AnomalyDataset:
    """Dataset of `split` ("train", "val" or "test") read from a distributed layout.

    Args:
        kind: "mvtec" | "visa" | "mpdd" | "btad" | "mvtec3d" | "folder" | "auto" (detected).
        root: the dataset root (classes are its sub-folders) or one class folder.
        classes: None for every class found (multi-class), a name, or a list of names.
        image_size: model input size, int or (H, W); images and masks are resized to it.
        mean, std: the encoder's normalisation.
        val_fraction: share of each class's training normals held out as "val" (seeded).
        missing_mask: what to do with an anomalous test image without mask: "error", or
            "full" (the whole image is anomalous; one warning with the count).
    Returns an `AnomalyDataset`; `dataset.class_names` lists its classes.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if missing_mask not in MISSING_MASK_POLICIES:
        raise ValueError(f"missing_mask must be one of {MISSING_MASK_POLICIES}, got {missing_mask!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if kind == AUTO_KIND:
        kind = detect_kind(root)
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; use one of {', '.join(DATASET_KINDS)} or 'auto'")
    available = resolve_classes(kind, root)
    class_names = _select_classes(available, classes, root, kind)
    samples: list[Sample] = []
    for class_name in class_names:
        class_dir = available[class_name]
        normals, test = read_class(kind, class_dir, class_name)
        if not normals:
            raise FileNotFoundError(
                f"class {class_name!r} has no training images in {class_dir}; "
                f"a {kind} class needs normal training images"
            )
        if split == "test":
            if not test:
                raise FileNotFoundError(f"class {class_name!r} has no test images in {class_dir}")
            _apply_missing_mask_policy(test, missing_mask, class_dir)
            samples.extend(test)
        else:
            train, val = split_validation(normals, val_fraction, seed)
            samples.extend(train if split == "train" else val)
    return AnomalyDataset(samples, class_names, ImageTransform(image_size, mean, std))

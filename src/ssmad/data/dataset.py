"""The dataset object and its factory: file lists -> samples of tensors.

Errors versus warnings (what a user would want):
- errors (nothing sensible to go on with): missing root or class folders, an unknown class
  name (the message lists the available ones), a class without training images, a test
  split with no test images, an anomalous test image without mask when
  `missing_mask="error"`, an image that does not hold its class's region of interest (naming the
  file, its size and the box), a corrupt or truncated file (raised when the sample is loaded,
  naming the file);
- warnings (the data are usable, the user should know): anomalous images without mask when
  `missing_mask="full"` (one warning with the count; the whole image counts as anomalous),
  a mask whose size differs from its image's (resized nearest-neighbour to the image, one
  warning per file, naming it).

Geometry: every class is brought to its own input size (``ssmad.data.geometry``): one size for
all (``image_size=256`` or ``(1248, 512)``), a rule (``"long:640"``: each class keeps the median
aspect ratio of its normal images), or a stored ``{class: Geometry}`` (a trained run's).
Masks come at the model's geometry (``mask_resolution="model"``, the papers' protocol) or at
their image's own size (``"original"``).

Region of interest (``ssmad.data.roi``, ``rois=``): the images of a class with a ROI are cropped to
it before they are scaled to the class's geometry (``long:N`` takes the ROI's aspect ratio); a
model-resolution mask is cropped the same way, an original-resolution mask stays whole (the map is
placed into the full image, 0 outside the ROI).
"""

from __future__ import annotations

import copy
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ssmad.data.geometry import Geometry, SizeRule, median_aspect, parse_size_rule
from ssmad.data.image_io import ImageReadError, image_size_wh, read_image, read_mask
from ssmad.data.layouts import (
    AUTO_KIND,
    DATASET_KINDS,
    Sample,
    detect_kind,
    read_class,
    read_mvtec2_class,
    resolve_classes,
)
from ssmad.data.roi import Roi, RoiSpecs, class_rois
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
MASK_RESOLUTIONS = ("original", "model")
ImageSize = int | tuple[int, int] | str | SizeRule | Mapping[str, Geometry]


class AnomalyDataset(Dataset):
    """Samples of one or more classes, each class at its own geometry; `dataset[i]` is a dict:

    - "image": float32 (3, H, W) at the class's geometry, normalised;
    - "mask": float32 (1, H, W) in {0, 1} (zeros for normal images), at the class's geometry (of the
      ROI's crop, when the class has one), or (1, h, w) at the image's own size when
      ``mask_resolution="original"``;
    - "label": int, 0 normal, 1 anomalous; "class_name": str; "path": str;
    - "width", "height": the image's own size in pixels.

    Samples of different geometries cannot share a batch: :meth:`geometry_batches` groups them.
    """

    def __init__(
        self,
        samples: list[Sample],
        class_names: list[str],
        geometries: Mapping[str, Geometry],
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        mask_resolution: str = "model",
        rois: Mapping[str, Roi] | None = None,
    ) -> None:
        if mask_resolution not in MASK_RESOLUTIONS:
            raise ValueError(f"mask_resolution must be one of {MASK_RESOLUTIONS}, got {mask_resolution!r}")
        self.samples = samples
        self.class_names = class_names
        self.geometries = dict(geometries)
        self.mask_resolution = mask_resolution
        self.rois = dict(rois or {})  # {class: Roi} of the classes whose images are cropped
        self.transforms = {name: ImageTransform(g.hw, mean, std) for name, g in self.geometries.items()}

    def geometry(self, index: int) -> Geometry:
        """The input geometry of sample ``index`` (its class's)."""
        return self.geometries[self.samples[index].class_name]

    def geometry_groups(self, indices: list[int] | None = None) -> dict[Geometry, list[int]]:
        """``indices`` (default: all) by geometry, in order within each; geometries in first-seen order."""
        groups: dict[Geometry, list[int]] = {}
        for index in range(len(self)) if indices is None else indices:
            groups.setdefault(self.geometry(index), []).append(index)
        return groups

    def geometry_batches(self, batch_size: int, indices: list[int] | None = None) -> list[list[int]]:
        """``indices`` (default: all, in order) cut into batches of one geometry each, at most
        ``batch_size`` long, keeping their order within each geometry."""
        return [group[i:i + batch_size] for group in self.geometry_groups(indices).values()
                for i in range(0, len(group), batch_size)]

    def subset(self, indices: list[int]) -> AnomalyDataset:
        """A dataset of the samples at ``indices`` (same classes, geometries and mask resolution)."""
        part = copy.copy(self)
        part.samples = [self.samples[i] for i in indices]
        return part

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        """Label of every sample, in order."""
        return [sample.label for sample in self.samples]

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = read_image(sample.path)
        transform = self.transforms[sample.class_name]
        roi = self.rois.get(sample.class_name)
        seen = image if roi is None else roi.crop(image, str(sample.path))
        size_hw = (image.height, image.width) if self.mask_resolution == "original" else transform.size_hw
        if sample.label == 0:
            mask = torch.zeros(1, *size_hw)
        elif sample.mask_path is None:
            mask = torch.ones(1, *size_hw)
        else:
            full_mask = self._mask_at_image_size(sample.mask_path, image.size)
            in_view = full_mask if roi is None or self.mask_resolution == "original" else roi.crop_array(full_mask)
            mask = resize_mask(in_view, size_hw)
        return {
            "image": transform(seen),
            "mask": mask,
            "label": sample.label,
            "class_name": sample.class_name,
            "width": image.width,
            "height": image.height,
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
        sizes = ", ".join(
            f"{name} {geometry}" + (f" of ROI {self.rois[name]}" if name in self.rois else "")
            for name, geometry in self.geometries.items()
        )
        return f"AnomalyDataset({len(self)} samples, geometries: {sizes}, masks at {self.mask_resolution} resolution)"


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


def _select_classes(available: dict[str, Path], classes: str | list[str] | None, root: str, kind: str) -> list[str]:
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
    root: str | Path | list[str | Path],
    split: str,
    classes: str | list[str] | None = None,
    image_size: ImageSize = 256,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    missing_mask: str = "error",
    mask_resolution: str = "model",
    rois: RoiSpecs = (),
) -> AnomalyDataset:
    """Dataset of `split` ("train", "val" or "test") read from a distributed layout.

    Args:
        kind: "mvtec" | "visa" | "mpdd" | "btad" | "mvtec3d" | "folder" | "auto" (detected).
        root: the dataset root (classes are its sub-folders) or one class folder; or a list of
            them, whose classes train one model (each root's layout detected on its own with
            "auto"; a class name found under two roots is refused).
        classes: None for every class found (multi-class), a name, or a list of names.
        image_size: the input geometry: an int (square), (H, W), an ``--image-size`` text or
            SizeRule (``"long:640"`` measures each class's median aspect ratio over all its
            normal images, so that train and val agree), or a stored {class: Geometry}.
        mean, std: the encoder's normalisation.
        val_fraction: share of each class's training normals held out as "val" (seeded). An
            MVTec AD 2 class has a validation split of its own: "val" is its ``validation/good``
            images and "train" all of ``train/good``, whatever the fraction.
        missing_mask: what to do with an anomalous test image without mask: "error", or
            "full" (the whole image is anomalous; one warning with the count).
        mask_resolution: "model" (masks resized to the class geometry) or "original".
        rois: regions of interest (``ssmad.data.roi``): ``--roi`` texts (``"[CLASS=]L,T,R,B"``) or a
            stored {class: Roi}; the images of those classes are cropped to them before scaling.
    Returns an `AnomalyDataset`; `dataset.class_names` lists its classes.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if missing_mask not in MISSING_MASK_POLICIES:
        raise ValueError(f"missing_mask must be one of {MISSING_MASK_POLICIES}, got {missing_mask!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    roots = [root] if isinstance(root, (str, Path)) else list(root)
    available = _classes_of_roots(kind, roots)
    roots_text = ", ".join(str(Path(r).expanduser()) for r in roots)
    class_names = _select_classes({name: where[1] for name, where in available.items()}, classes, roots_text, kind)
    rois_of_classes = class_rois(rois, class_names)
    samples: list[Sample] = []
    geometries: dict[str, Geometry] = {}
    for class_name in class_names:
        class_kind, class_dir, _ = available[class_name]
        normals, test = read_class(class_kind, class_dir, class_name)
        if not normals:
            raise FileNotFoundError(
                f"class {class_name!r} has no training images in {class_dir}; "
                f"a {class_kind} class needs normal training images"
            )
        geometries[class_name] = _class_geometry(image_size, class_name, normals, rois_of_classes.get(class_name))
        if split == "test":
            if not test:
                raise FileNotFoundError(f"class {class_name!r} has no test images in {class_dir}")
            _apply_missing_mask_policy(test, missing_mask, class_dir)
            samples.extend(test)
        elif class_kind == "mvtec2":
            samples.extend(normals if split == "train" else read_mvtec2_class(class_dir, class_name).validation)
        else:
            train, val = split_validation(normals, val_fraction, seed)
            samples.extend(train if split == "train" else val)
    _check_rois_fit(samples, rois_of_classes)
    return AnomalyDataset(samples, class_names, geometries, mean, std, mask_resolution, rois_of_classes)


def _classes_of_roots(kind: str, roots: list[str | Path]) -> dict[str, tuple[str, Path, Path]]:
    """``{class: (layout kind, class folder, root)}`` over every root; a name in two roots is refused."""
    available: dict[str, tuple[str, Path, Path]] = {}
    for root in (Path(r).expanduser() for r in roots):
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {root}")
        root_kind = detect_kind(root) if kind == AUTO_KIND else kind
        if root_kind not in DATASET_KINDS:
            raise ValueError(f"unknown dataset kind {root_kind!r}; use one of {', '.join(DATASET_KINDS)} or 'auto'")
        for name, class_dir in resolve_classes(root_kind, root).items():
            if name in available:
                raise ValueError(
                    f"class {name!r} is under both {available[name][2]} and {root}: one model needs distinct "
                    "class names; pass --classes to choose, or rename one folder"
                )
            available[name] = (root_kind, class_dir, root)
    return available


def _check_rois_fit(samples: list[Sample], rois: Mapping[str, Roi]) -> None:
    """Refuse, before any training or testing, a file that does not hold its class's region of interest
    (read from its header; unreadable files are left to screening)."""
    for sample in samples:
        if sample.class_name in rois:
            try:
                size_wh = image_size_wh(sample.path)
            except ImageReadError:
                continue
            rois[sample.class_name].check_fits(size_wh, str(sample.path))


def _class_geometry(image_size: ImageSize, class_name: str, normals: list[Sample], roi: Roi | None = None) -> Geometry:
    """The geometry ``image_size`` gives ``class_name`` (for ``long:N``: the aspect ratio of its
    ``roi``, or else measured over its normals)."""
    if isinstance(image_size, Mapping):
        if class_name not in image_size:
            raise ValueError(f"no stored geometry for class {class_name!r}; the model knows {', '.join(image_size)}")
        return image_size[class_name]
    if isinstance(image_size, tuple):
        return Geometry(*image_size)
    rule = image_size if isinstance(image_size, SizeRule) else parse_size_rule(image_size)
    if not rule.per_class:
        return rule.geometry_for(1.0)
    if roi is not None:
        return rule.geometry_for(roi.aspect)
    sizes = []
    for sample in normals:
        try:
            sizes.append(image_size_wh(sample.path))
        except ImageReadError:
            continue  # unusable files are left out (and named) when the images are screened
    if not sizes:
        raise ValueError(f"class {class_name!r} has no readable normal image to measure its aspect ratio from")
    return rule.geometry_for(median_aspect(sizes))

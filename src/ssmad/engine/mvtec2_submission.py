"""Predictions in the form MVTec AD 2's benchmark server takes (its test_private and
test_private_mixed splits have no public ground truth).

For an image ``<root>/<class>/<split>/.../<stem>.png`` of the dataset at ``<root>``:

- ``<out>/anomaly_images/<class>/<split>/.../<stem>.tiff``: the anomaly map, one channel, float16,
  at the image's own resolution;
- ``<out>/anomaly_images_thresholded/<class>/<split>/.../<stem>.png``: the binary defect mask,
  8-bit grayscale, 0 normal and 255 anomalous, same size.

Assumptions, as far as the published description and the authors' public loading code go (no
server was reachable to check them): paths mirror the image's path relative to the dataset root
with the suffix changed; the server reads the masks as "anomalous where non-zero"; values of a map
beyond float16's range (65504) are clipped to it. Packing the folder (the authors ship a checker
that makes the archive) is left to that checker.

Float16 TIFF is written with ``tifffile`` (the optional extra ``ssmad[mvtec2]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

MAPS_FOLDER = "anomaly_images"
MASKS_FOLDER = "anomaly_images_thresholded"
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _tifffile():
    try:
        import tifffile
    except ImportError as error:
        raise ImportError(
            "writing MVTec AD 2 predictions needs tifffile (float16 TIFF): pip install 'ssmad[mvtec2]'"
        ) from error
    return tifffile


def submission_paths(out: str | Path, dataset_root: str | Path, image_path: str | Path) -> tuple[Path, Path]:
    """(anomaly map .tiff, mask .png) of the image at ``image_path`` below ``dataset_root``."""
    try:
        relative = Path(image_path).relative_to(dataset_root)
    except ValueError as error:
        raise ValueError(f"image {image_path} is not below the dataset root {dataset_root}; pass the root it came from") from error
    out = Path(out)
    return (out / MAPS_FOLDER / relative).with_suffix(".tiff"), (out / MASKS_FOLDER / relative).with_suffix(".png")


def write_submission_image(
    out: str | Path, dataset_root: str | Path, image_path: str | Path, anomaly_map: np.ndarray, mask: np.ndarray
) -> tuple[Path, Path]:
    """Write one image's map (H, W) as float16 TIFF and its mask (H, W) bool as a 0/255 PNG;
    returns their paths (see :func:`submission_paths`). Both must be at the image's resolution."""
    tifffile = _tifffile()
    values, mask = np.asarray(anomaly_map), np.asarray(mask)
    if values.ndim != 2 or values.shape != mask.shape:
        raise ValueError(
            f"{image_path}: the anomaly map {values.shape} and the mask {mask.shape} must be one (H, W) "
            "array each, at the image's resolution"
        )
    if not np.isfinite(values).all():
        raise ValueError(f"{image_path}: the anomaly map contains NaN or infinite values")
    map_path, mask_path = submission_paths(out, dataset_root, image_path)
    map_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(map_path, np.clip(values, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16))
    Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8)).save(mask_path)
    return map_path, mask_path

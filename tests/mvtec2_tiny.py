"""A miniature MVTec AD 2 tree: the distributed folder layout and file names with tiny images.

As distributed (see ``ssmad.data.layouts.read_mvtec2_class`` for the assumptions):

    <root>/<class>/train/good/NNN_<lighting>.png
    <root>/<class>/validation/good/NNN_<lighting>.png
    <root>/<class>/test_public/good/NNN_<lighting>.png
    <root>/<class>/test_public/bad/NNN_<lighting>.png
    <root>/<class>/test_public/ground_truth/bad/NNN_<lighting>_mask.png   (0 / 255)
    <root>/<class>/test_private/NNN_<lighting>.png                        (no labels)
    <root>/<class>/test_private_mixed/NNN_<lighting>.png                  (no labels)

Lighting names are the dataset's (regular, overexposed, underexposed, shift_1..3). Each class has
an image size of its own, not square (the real classes differ in size and aspect ratio); normal
images are a smooth texture of the class, a defect is a bright rectangle, its mask that rectangle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LIGHTINGS = ("regular", "overexposed", "underexposed", "shift_1", "shift_2", "shift_3")
TINY_CLASSES = {"can": (48, 32), "vial": (24, 40)}  # class -> (width, height)
DEFECT_BOX = (4, 6, 12, 14)  # left, top, right, bottom


def _normal(rng: np.random.Generator, size: tuple[int, int], shade: int) -> np.ndarray:
    width, height = size
    columns = np.linspace(0, 2 * np.pi, width)[None, :, None]
    base = shade + 20 * np.sin(columns + rng.uniform(0, 0.3)) + rng.normal(0, 2, (height, width, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def _with_defect(image: np.ndarray) -> np.ndarray:
    left, top, right, bottom = DEFECT_BOX
    image = image.copy()
    image[top:bottom, left:right] = 250
    return image


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_mvtec2_tree(
    root: Path,
    classes: dict[str, tuple[int, int]] = TINY_CLASSES,
    num_train: int = 6,
    num_validation: int = 3,
    num_test: int = 2,
    num_private: int = 3,
    seed: int = 0,
) -> Path:
    """Write the miniature tree under ``root``; returns ``root``. Counts are per class: num_test
    good and num_test bad images in test_public, num_private images in each private split (the
    first of which has a defect, unknown to the reader)."""
    rng = np.random.default_rng(seed)
    for index, (name, size) in enumerate(sorted(classes.items())):
        shade = 90 + 40 * index
        folder = root / name

        def lighting(i: int) -> str:
            return LIGHTINGS[i % len(LIGHTINGS)]

        for split, count in (("train", num_train), ("validation", num_validation)):
            for i in range(count):
                _save(folder / split / "good" / f"{i:03d}_{lighting(i)}.png", _normal(rng, size, shade))
        for i in range(num_test):
            _save(folder / "test_public" / "good" / f"{i:03d}_regular.png", _normal(rng, size, shade))
            stem = f"{i:03d}_{lighting(i)}"
            _save(folder / "test_public" / "bad" / f"{stem}.png", _with_defect(_normal(rng, size, shade)))
            mask = np.zeros(size[::-1], dtype=np.uint8)
            left, top, right, bottom = DEFECT_BOX
            mask[top:bottom, left:right] = 255
            _save(folder / "test_public" / "ground_truth" / "bad" / f"{stem}_mask.png", mask)
        for split in ("test_private", "test_private_mixed"):
            for i in range(num_private):
                image = _normal(rng, size, shade)
                _save(folder / split / f"{i:03d}_{lighting(i + (split == 'test_private_mixed'))}.png",
                      _with_defect(image) if i == 0 else image)
    return root

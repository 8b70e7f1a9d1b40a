"""Region of interest: a fixed box of each class's images that the model sees (``--roi``).

Inspection cameras often frame more than the part. ``--roi [CLASS=]LEFT,TOP,RIGHT,BOTTOM`` names a
box in pixels of the original image, Pillow's convention (``image.crop((left, top, right,
bottom))``: left and top included, right and bottom excluded, so the box is ``right - left`` wide).
Without ``CLASS=`` it applies to every class; a ``CLASS=`` box replaces it for that class.

The images of a class with a ROI are cropped to it before they are scaled to the class's geometry
(``long:N`` takes the ROI's aspect ratio); the map, scored on the crop, is resized to the ROI's size
and placed into the full image with 0 (the lowest anomaly score) outside (:meth:`Roi.place`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass

import numpy as np
from PIL import Image

ROI_FORM = "[CLASS=]LEFT,TOP,RIGHT,BOTTOM (pixels of the original image, e.g. bottle=40,0,860,900)"


@dataclass(frozen=True)
class Roi:
    """A box ``left, top, right, bottom`` (pixels, right and bottom excluded) of an original image."""

    left: int
    top: int
    right: int
    bottom: int

    def __post_init__(self) -> None:
        if min(self.left, self.top) < 0:
            raise ValueError(f"region of interest {self}: left and top must be 0 or more (pixels from the top-left corner)")
        if self.right <= self.left or self.bottom <= self.top:
            raise ValueError(
                f"region of interest {self} is empty: give right > left and bottom > top "
                "(LEFT,TOP,RIGHT,BOTTOM, Pillow's box)"
            )

    def __str__(self) -> str:
        return ",".join(str(value) for value in astuple(self))

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def size_hw(self) -> tuple[int, int]:
        """(height, width) of the box."""
        return self.height, self.width

    @property
    def aspect(self) -> float:
        """width / height of the box."""
        return self.width / self.height

    @classmethod
    def parse(cls, text: str) -> Roi:
        """``"LEFT,TOP,RIGHT,BOTTOM"`` -> Roi; ValueError says the form."""
        match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*", text)
        if match is None:
            raise ValueError(f"region of interest {text!r} is not understood: give {ROI_FORM}")
        return cls(*(int(value) for value in match.groups()))

    def check_fits(self, size_wh: tuple[int, int], source: str) -> None:
        """Refuse an image of ``size_wh`` (width, height) that does not hold the whole box."""
        width, height = size_wh
        if self.right > width or self.bottom > height:
            raise ValueError(
                f"{source} is {width}x{height} (W x H) but its region of interest {self} reaches to x={self.right}, "
                f"y={self.bottom}: give a --roi inside every image of the class, or leave this image out"
            )

    def crop(self, image: Image.Image, source: str) -> Image.Image:
        """The box of ``image`` (``source`` names it in the error when the image does not hold the box)."""
        self.check_fits(image.size, source)
        return image.crop(astuple(self))

    def crop_array(self, values: np.ndarray) -> np.ndarray:
        """The box of an array (H, W) of the original image's size."""
        return values[self.top : self.bottom, self.left : self.right]

    def place(self, roi_map: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """A map (h, w) of the box's size -> float32 (H, W) of the full image: the map inside the box,
        0 (the lowest anomaly score) outside; a bool mask stays bool, False outside."""
        if roi_map.shape != self.size_hw:
            raise ValueError(f"a map of shape {roi_map.shape} does not fit region of interest {self} ({self.size_hw})")
        self.check_fits((size_hw[1], size_hw[0]), f"an image of {size_hw[1]}x{size_hw[0]}")
        canvas = np.zeros(size_hw, bool if roi_map.dtype == bool else np.float32)
        canvas[self.top : self.bottom, self.left : self.right] = roi_map
        return canvas


RoiSpecs = Iterable[str] | Mapping[str, Roi]  # --roi texts, or a run's stored {class: Roi}


def parse_roi_option(text: str) -> tuple[str | None, Roi]:
    """One ``--roi``: ``"CLASS=L,T,R,B"`` -> (CLASS, Roi), ``"L,T,R,B"`` -> (None, Roi): every class."""
    name, _, box = text.rpartition("=")
    name = name.strip()
    if _ and not name:
        raise ValueError(f"region of interest {text!r} has an empty class name: give {ROI_FORM}")
    return (name or None), Roi.parse(box)


def class_rois(specs: RoiSpecs, class_names: list[str]) -> dict[str, Roi]:
    """``{class: Roi}`` of ``class_names`` from ``--roi`` texts or a stored ``{class: Roi}``.

    Texts: a box without class applies to every class, one with ``CLASS=`` replaces it for that
    class; a class the data lacks or two boxes for the same class are refused. A stored mapping
    keeps the classes among ``class_names`` (a test of some of a run's classes).
    """
    if isinstance(specs, Mapping):
        return {name: roi for name, roi in specs.items() if name in class_names}
    every: Roi | None = None
    named: dict[str, Roi] = {}
    for text in specs:
        name, roi = parse_roi_option(text)
        if name is not None and name not in class_names:
            raise ValueError(
                f"--roi {text}: the data has no class {name!r}; its classes are {', '.join(class_names)}"
            )
        if (every if name is None else named.get(name)) is not None:
            whose = "every class" if name is None else f"class {name!r}"
            raise ValueError(f"--roi {text}: {whose} already has a region of interest; give one box each")
        if name is None:
            every = roi
        else:
            named[name] = roi
    boxes = {name: named.get(name, every) for name in class_names}
    return {name: roi for name, roi in boxes.items() if roi is not None}


def rois_to_lists(rois: Mapping[str, Roi]) -> dict[str, list[int]]:
    """``{class: [left, top, right, bottom]}``: how checkpoints and export metadata store them."""
    return {name: list(astuple(roi)) for name, roi in rois.items()}


def rois_from_lists(stored: Mapping[str, list[int]]) -> dict[str, Roi]:
    """Inverse of :func:`rois_to_lists`."""
    return {name: Roi(*box) for name, box in stored.items()}

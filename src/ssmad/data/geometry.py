"""Input geometry: the size (H, W) at which the model sees the images of each class.

``--image-size`` takes one of three forms (a :class:`SizeRule`):

- ``256``: every class square, 256 x 256 (the papers' protocol and the default);
- ``1248x512``: every class ``H x W``, height first (KolektorSDD's tall images);
- ``long:640``: each class keeps its own aspect ratio, the median of its training images':
  long side 640, short side rounded to a multiple of 32.

Both sides are multiples of 32 (the bottleneck works at stride 32) and at least 32, and not both
32: the deepest map needs two cells at least (its instance norms take statistics over them). An aspect
ratio beyond :data:`MAX_ASPECT` (8:1) is refused: the deepest feature map would be one cell
across, too narrow for the decoder's 3x3 convolutions to see anything but padding.
A class's geometry is stored in the checkpoint; an image of an unknown class takes the stored
geometry nearest its own aspect ratio (:func:`nearest_geometry`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SIDE_MULTIPLE = 32  # the bottleneck output is at stride 32
MIN_SIDE = 32
MAX_ASPECT = 8.0  # long side / short side
SIZE_RULE_KINDS = ("square", "fixed", "long")
DEFAULT_SIZE_RULE = "256"  # the papers' protocol
_FORMS = "N (square), HxW (height first, e.g. 1248x512) or long:N (each class keeps its aspect ratio)"


@dataclass(frozen=True, order=True)
class Geometry:
    """A model input size: ``height`` x ``width`` pixels, both multiples of 32."""

    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            side = getattr(self, name)
            if side < MIN_SIDE or side % SIDE_MULTIPLE:
                raise ValueError(
                    f"image {name} {side} px cannot work: sides must be multiples of {SIDE_MULTIPLE} "
                    f"and at least {MIN_SIDE} px (e.g. 256, 512, 1248x512)"
                )
        if self.height == self.width == MIN_SIDE:
            raise ValueError(f"image size {self} cannot work: the deepest feature map would be one cell; use 64 or more")
        if max(self.height, self.width) > MAX_ASPECT * min(self.height, self.width):
            raise ValueError(
                f"image size {self} has an aspect ratio beyond {MAX_ASPECT:g}:1; crop the images "
                f"or split them into tiles (--tile)"
            )

    @property
    def aspect(self) -> float:
        """width / height."""
        return self.width / self.height

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def __str__(self) -> str:
        return f"{self.height}x{self.width}"

    @classmethod
    def parse(cls, text: str) -> Geometry:
        """``"HxW"`` (or ``"N"`` for a square) -> Geometry."""
        rule = parse_size_rule(text)
        if rule.kind == "long":
            raise ValueError(f"{text!r} is an aspect-keeping rule, not one size; give HxW")
        return rule.geometry_for(1.0)


@dataclass(frozen=True)
class SizeRule:
    """What ``--image-size`` says: ``kind`` "square" / "fixed" (``height`` x ``width``) or
    "long" (``long_side``, the short side from each class's aspect ratio)."""

    kind: str
    height: int = 0
    width: int = 0
    long_side: int = 0

    def __str__(self) -> str:
        if self.kind == "long":
            return f"long:{self.long_side}"
        return str(self.height) if self.kind == "square" else f"{self.height}x{self.width}"

    @property
    def per_class(self) -> bool:
        """True when each class's geometry depends on its images (``long:N``)."""
        return self.kind == "long"

    def geometry_for(self, aspect: float) -> Geometry:
        """The geometry of a class whose images have median ``aspect`` (width / height)."""
        if self.kind != "long":
            return Geometry(self.height, self.width)
        if not (aspect > 0 and math.isfinite(aspect)):
            raise ValueError(f"aspect ratio {aspect!r} is not a positive number")
        short = _round_side(self.long_side / max(aspect, 1 / aspect))
        return Geometry(self.long_side, short) if aspect < 1 else Geometry(short, self.long_side)


def _round_side(side: float) -> int:
    """Nearest multiple of 32, at least 32."""
    return max(MIN_SIDE, SIDE_MULTIPLE * round(side / SIDE_MULTIPLE))


def parse_size_rule(text: str | int) -> SizeRule:
    """Parse ``--image-size``: ``"256"``, ``"1248x512"`` or ``"long:640"``; ValueError says the forms."""
    spec = str(text).strip().lower()
    if match := re.fullmatch(r"(\d+)", spec):
        side = int(match[1])
        Geometry(side, side)
        return SizeRule("square", side, side)
    if match := re.fullmatch(r"(\d+)\s*x\s*(\d+)", spec):
        height, width = int(match[1]), int(match[2])
        Geometry(height, width)
        return SizeRule("fixed", height, width)
    if match := re.fullmatch(r"long:(\d+)", spec):
        side = int(match[1])
        Geometry(side, side)
        return SizeRule("long", long_side=side)
    raise ValueError(f"image size {text!r} is not understood: give {_FORMS}")


def median_aspect(sizes_wh: Iterable[tuple[int, int]]) -> float:
    """Median width / height of images given as (width, height) pairs (PIL's ``image.size``)."""
    aspects = sorted(width / height for width, height in sizes_wh)
    if not aspects:
        raise ValueError("no image sizes to take an aspect ratio from")
    middle = len(aspects) // 2
    return aspects[middle] if len(aspects) % 2 else (aspects[middle - 1] + aspects[middle]) / 2


def class_geometries(rule: SizeRule, aspects: Mapping[str, float]) -> dict[str, Geometry]:
    """Each class's geometry under ``rule`` from its median training aspect ratio."""
    return {name: rule.geometry_for(aspect) for name, aspect in aspects.items()}


def nearest_geometry(aspect: float, geometries: Mapping[str, Geometry]) -> tuple[str, Geometry]:
    """(class, geometry) of the stored geometry nearest ``aspect`` (width / height), compared in
    log scale so that 2:1 and 1:2 are equally far from 1:1; ties go to the first class."""
    if not geometries:
        raise ValueError("the model stores no geometry")
    name = min(geometries, key=lambda c: abs(math.log(geometries[c].aspect) - math.log(aspect)))
    return name, geometries[name]


def aspect_mismatch(aspect: float, geometry: Geometry, tolerance: float = 0.1) -> bool:
    """True when an image of ``aspect`` is stretched by more than ``tolerance`` (10 %) on its way
    to ``geometry``: the result and the report then carry a warning."""
    return abs(math.log(aspect / geometry.aspect)) > math.log1p(tolerance)

"""Pixel thresholds: the score from which a pixel belongs to a defect (the mask is ``map >= value``).

Rules (:data:`PIXEL_RULES`), each computed per class from the maps of normal images the model was
not trained on (the calibration normals; MVTec AD 2's validation split):

- ``image`` (the default): the image threshold itself, applied to the images decided anomalous
  (``Detector.mask_threshold``). The image score is the mean of the blurred map's top pixels
  (the papers' maximum with ``image_score="max"``, ``ssmad.models.image_score``), at most its
  maximum, so every image decided anomalous has at least one pixel at or above the threshold (so
  at least one region, with ``ssmad.metrics.defect_regions``' default minimum area) and no image
  decided normal gets one. Needs no maps. (The promise holds for the map the score is taken from:
  a map resized to the original resolution by interpolation can lose the peak's exact value, so
  the mask is taken from the same map.)
- ``mean_std``: MVTec AD 2's baseline rule (Heckler-Kram et al., 2025): the mean plus ``num_std``
  (default 3) standard deviations of all pixel scores of the normals (population standard
  deviation, over every pixel of every image at once).
- ``pixel_fpr``: the ``1 - pixel_fpr`` quantile of all normal pixel scores (linear interpolation,
  as the image threshold's quantile), so about a fraction ``pixel_fpr`` (default 0.001) of normal
  pixels is marked.

Calibration (``ssmad.engine.thresholds.calibrate``) computes every class's threshold, and the
global one, by one :class:`PixelRule` (``--pixel-rule`` and its parameter ``--pixel-num-std`` /
``--pixel-fpr`` of ``ssmad train`` and ``ssmad calibrate``), from the calibration normals' maps at
the model's resolution: the maps the masks are taken from (``ssmad.engine.detector``).

Maps are (N, H, W) arrays or N (H_i, W_i) arrays (each image at its own resolution): every pixel
counts once, so a large image weighs more than a small one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import numpy as np

PIXEL_RULES = ("image", "mean_std", "pixel_fpr")
DEFAULT_PIXEL_RULE = "image"
DEFAULT_NUM_STD = 3.0  # MVTec AD 2's baselines
DEFAULT_PIXEL_FPR = 0.001  # a fraction of normal pixels marked by the pixel_fpr rule


@dataclass(frozen=True)
class PixelThreshold:
    """One class's pixel threshold and how it was made.

    rule: one of :data:`PIXEL_RULES`; value: the threshold (mask = map >= value); num_std /
    pixel_fpr: the rule's parameter (None for the rules without it); num_images / num_pixels: the
    normals it was computed from (0 for the ``image`` rule).
    """

    rule: str
    value: float
    num_std: float | None = None
    pixel_fpr: float | None = None
    num_images: int = 0
    num_pixels: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PixelThreshold:
        """Inverse of :meth:`to_dict`: keys this version does not know are ignored (a later
        version's fields); a missing field with a default takes it; a missing required one, or an
        unknown rule, is a ValueError naming it."""
        values = {}
        for spec in fields(cls):
            if spec.name in data:
                values[spec.name] = data[spec.name]
            elif spec.default is MISSING:
                raise ValueError(f"pixel threshold record without its '{spec.name}' field: {sorted(data)}")
        if values["rule"] not in PIXEL_RULES:
            raise ValueError(f"pixel threshold record with unknown rule {values['rule']!r}; known: {', '.join(PIXEL_RULES)}")
        return cls(**values)


def _pixel_arrays(maps: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """N maps as float64-ready numpy arrays, each flattened; refuses no maps and NaN/inf."""
    arrays = [np.asarray(values).reshape(-1) for values in maps]
    if not arrays or sum(a.size for a in arrays) == 0:
        raise ValueError("no normal maps to compute a pixel threshold from; give the calibration normals' maps")
    for index, values in enumerate(arrays):
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"normal map {index} contains NaN or infinite values; fix the model output first")
    return arrays


def mean_std_threshold(maps: np.ndarray | Sequence[np.ndarray], num_std: float = DEFAULT_NUM_STD) -> float:
    """Mean + num_std * standard deviation of all pixels of ``maps`` (one pass per image, float64;
    the per-image means and variances are combined exactly, without concatenating the maps)."""
    arrays = _pixel_arrays(maps)
    counts = np.array([a.size for a in arrays], dtype=np.float64)
    means = np.array([a.mean(dtype=np.float64) for a in arrays])
    variances = np.array([a.var(dtype=np.float64) for a in arrays])
    mean = float(np.dot(counts, means) / counts.sum())
    variance = float(np.dot(counts, variances + (means - mean) ** 2) / counts.sum())
    return mean + num_std * float(np.sqrt(variance))


def pixel_fpr_threshold(maps: np.ndarray | Sequence[np.ndarray], pixel_fpr: float = DEFAULT_PIXEL_FPR) -> float:
    """The ``1 - pixel_fpr`` quantile (linear interpolation) of all pixels of ``maps``."""
    if not 0.0 < pixel_fpr < 1.0:
        raise ValueError(f"pixel false-positive rate must be in (0, 1), got {pixel_fpr}")
    return float(np.quantile(np.concatenate(_pixel_arrays(maps)), 1.0 - pixel_fpr))


def calibrate_pixel_threshold(
    rule: str,
    image_threshold: float,
    normal_maps: np.ndarray | Sequence[np.ndarray] | None = None,
    num_std: float = DEFAULT_NUM_STD,
    pixel_fpr: float = DEFAULT_PIXEL_FPR,
) -> PixelThreshold:
    """The :class:`PixelThreshold` of one class by ``rule``.

    image_threshold: the class's calibrated image threshold (the ``image`` rule's value).
    normal_maps: (N, H, W) or N (H_i, W_i) maps of the calibration normals (the other rules).
    """
    if rule not in PIXEL_RULES:
        raise ValueError(f"unknown pixel threshold rule {rule!r}; use one of {', '.join(PIXEL_RULES)}")
    if rule == "image":
        return PixelThreshold("image", float(image_threshold))
    if normal_maps is None:
        raise ValueError(f"the {rule!r} pixel threshold rule needs the calibration normals' maps")
    num_images = len(normal_maps)
    num_pixels = int(sum(np.asarray(values).size for values in normal_maps))
    if rule == "mean_std":
        return PixelThreshold("mean_std", mean_std_threshold(normal_maps, num_std), num_std=num_std,
                              num_images=num_images, num_pixels=num_pixels)
    return PixelThreshold("pixel_fpr", pixel_fpr_threshold(normal_maps, pixel_fpr), pixel_fpr=pixel_fpr,
                          num_images=num_images, num_pixels=num_pixels)


@dataclass(frozen=True)
class PixelRule:
    """The rule calibration computes each class's :class:`PixelThreshold` by, with its parameters
    (``num_std`` used by ``mean_std``, ``pixel_fpr`` by ``pixel_fpr``)."""

    rule: str = DEFAULT_PIXEL_RULE
    num_std: float = DEFAULT_NUM_STD
    pixel_fpr: float = DEFAULT_PIXEL_FPR

    def __post_init__(self) -> None:
        if self.rule not in PIXEL_RULES:
            raise ValueError(f"unknown pixel threshold rule {self.rule!r}; use one of {', '.join(PIXEL_RULES)}")
        if not 0.0 < self.pixel_fpr < 1.0:
            raise ValueError(f"pixel false-positive rate (--pixel-fpr) must be in (0, 1), got {self.pixel_fpr}")

    @classmethod
    def of(cls, threshold: PixelThreshold) -> PixelRule:
        """The rule a stored threshold was computed by (defaults for the parameters it lacks)."""
        return cls(threshold.rule, threshold.num_std if threshold.num_std is not None else DEFAULT_NUM_STD,
                   threshold.pixel_fpr if threshold.pixel_fpr is not None else DEFAULT_PIXEL_FPR)

    def threshold(
        self, image_threshold: float, normal_maps: np.ndarray | Sequence[np.ndarray] | None = None
    ) -> PixelThreshold:
        """One class's threshold by this rule (see :func:`calibrate_pixel_threshold`)."""
        return calibrate_pixel_threshold(self.rule, image_threshold, normal_maps, self.num_std, self.pixel_fpr)

"""The calibration record: decision thresholds, normalised scores and heatmap scales, and how
they follow from the scores and maps of normal images (``ssmad.engine.calibrate_on_normals``
gets those from a model and a dataset).

For each class (and once over all classes, ``global``), from the image scores ``s`` and the
anomaly maps of the held-out normal images:

- ``threshold`` by the record's ``threshold_rule`` (:func:`image_threshold`): ``conformal``
  (the default), the k-th smallest of the n scores with k = ceil((n + 1) (1 - target_fpr)), at most
  n; or ``quantile`` (the rule before it, and that of a record calibrated before it), the
  ``1 - target_fpr`` quantile of ``s`` with linear interpolation. An image is anomalous when its
  score is *at or above* the threshold (``>=``, as a pixel is in the defect mask when its value is
  at or above the pixel threshold: so the default pixel rule's mask is non-empty exactly for the
  images decided anomalous). Why ``conformal``: for exchangeable normal scores the rate at which a
  new normal reaches the k-th smallest of n is (n + 1 - k) / (n + 1), so it is at most
  ``target_fpr`` whenever n + 1 >= 1 / target_fpr, where the interpolated quantile of few normals
  sits between the two largest scores and flags about twice the target (measured on held-out
  normals: ``benchmarks/bench_thresholds.py``, docs/decisions.md). With fewer normals no threshold
  from them can promise the target: ``conformal`` then takes the largest score (rate 1 / (n + 1)),
  and train.log and the report say so;
- ``scale`` = the standard deviation of ``s`` (floored), and the normalised score
  ``sigmoid((score - threshold) / scale)``: 0.5 at the threshold, towards 1 above it;
- ``map_low`` = the median pixel value of the validation maps and ``map_high`` = ``threshold``:
  heatmaps are shown as ``clip((map - map_low) / (map_high - map_low), 0, 1)``, one fixed scale
  per class, so a pixel at full colour means "above the image decision threshold" and a normal
  image never looks alarming because of per-image min-max normalisation;
- ``pixel``: the pixel threshold (``ssmad.engine.pixel_thresholds``) by the calibration's
  :class:`~ssmad.engine.pixel_thresholds.PixelRule`. A record without one (written before pixel
  thresholds existed) has the default rule ``image``: the pixel threshold is ``threshold``.

Given the normals' embeddings, the calibration also holds each class's ``prototypes``
(``ssmad.engine.class_inference``), from which the class of an image nothing names is inferred;
a calibration without them (older runs and exports) infers none.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ssmad.engine.class_inference import ClassPrototype, class_prototypes
from ssmad.engine.fpr_intervals import check_threshold_rule, conformal_index
from ssmad.engine.pixel_thresholds import PixelRule, PixelThreshold

GLOBAL = "global"
DEFAULT_TARGET_FPR = 0.01  # the false-positive rate on normals a threshold aims at
DEFAULT_THRESHOLD_RULE = "conformal"
LEGACY_THRESHOLD_RULE = "quantile"  # the rule of a record that names none (calibrated before ``conformal``)
_MIN_SCALE = 1e-8


def image_threshold(scores: np.ndarray, target_fpr: float, rule: str = DEFAULT_THRESHOLD_RULE) -> float:
    """The image threshold of normal scores (N,) aiming at ``target_fpr`` false positives, by
    ``rule`` (see the module docstring): ``conformal``, the k-th smallest with
    k = min(ceil((N + 1) (1 - target_fpr)), N); ``quantile``, numpy's linear quantile."""
    scores = np.asarray(scores, dtype=np.float64)
    if check_threshold_rule(rule) == "quantile":
        return float(np.quantile(scores, 1.0 - target_fpr))
    return float(np.sort(scores)[conformal_index(scores.size, target_fpr) - 1])


@dataclass(frozen=True)
class ClassCalibration:
    """Threshold, score spread and heatmap range of one class (or of all classes)."""

    threshold: float
    scale: float
    map_low: float
    map_high: float
    num_images: int
    pixel: PixelThreshold | None = None  # None: the ``image`` rule (see :attr:`pixel_threshold`)
    threshold_rule: str = LEGACY_THRESHOLD_RULE  # how ``threshold`` followed from the scores

    @property
    def pixel_threshold(self) -> PixelThreshold:
        """The pixel threshold: the stored one, else the ``image`` rule's (the image threshold)."""
        return self.pixel if self.pixel is not None else PixelRule("image").threshold(self.threshold)

    def is_anomalous(self, scores: np.ndarray) -> np.ndarray:
        """Image decisions (N,) bool of raw scores (N,): score >= threshold."""
        return np.asarray(scores) >= self.threshold

    def normalize(self, scores: np.ndarray) -> np.ndarray:
        """Raw scores (N,) -> normalised scores (N,) in (0, 1), 0.5 at the threshold."""
        z = (np.asarray(scores, dtype=np.float64) - self.threshold) / self.scale
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))

    def heatmap(self, maps: np.ndarray) -> np.ndarray:
        """Anomaly maps (..., H, W) -> display values in [0, 1] on this class's fixed scale."""
        span = max(self.map_high - self.map_low, _MIN_SCALE)
        return np.clip((np.asarray(maps, dtype=np.float32) - self.map_low) / span, 0.0, 1.0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassCalibration:
        """Inverse of ``asdict``: keys this version does not know are ignored (a later version's
        added fields); a missing field with a default takes it; a missing required one is a
        ValueError naming it."""
        values = {}
        for spec in fields(cls):
            if spec.name in data:
                values[spec.name] = data[spec.name]
            elif spec.default is MISSING and spec.default_factory is MISSING:
                raise ValueError(f"calibration record without its '{spec.name}' field: {sorted(data)}")
        if values.get("pixel") is not None:
            values["pixel"] = PixelThreshold.from_dict(values["pixel"])
        return cls(**values)


@dataclass(frozen=True)
class Calibration:
    """Per-class calibrations plus a global one for images whose class is unknown, and the class
    prototypes that infer an image's class (empty: none recorded)."""

    target_fpr: float
    classes: dict[str, ClassCalibration]
    overall: ClassCalibration
    prototypes: dict[str, ClassPrototype] = field(default_factory=dict)

    def for_class(self, class_name: str | None) -> ClassCalibration:
        """The class's calibration, or the global one for ``None``."""
        return self.overall if class_name is None else self.classes[class_name]

    @property
    def pixel_rule(self) -> PixelRule:
        """The rule the pixel thresholds were computed by (the global one's)."""
        return PixelRule.of(self.overall.pixel_threshold)

    def to_dict(self) -> dict:
        return {
            "target_fpr": self.target_fpr,
            "classes": {name: asdict(cal) for name, cal in self.classes.items()},
            GLOBAL: asdict(self.overall),
            "prototypes": {name: prototype.to_dict() for name, prototype in self.prototypes.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        """Inverse of :meth:`to_dict`, tolerant of added keys (see :meth:`ClassCalibration.from_dict`)."""
        return cls(
            target_fpr=data["target_fpr"],
            classes={name: ClassCalibration.from_dict(cal) for name, cal in data["classes"].items()},
            overall=ClassCalibration.from_dict(data[GLOBAL]),
            prototypes={name: ClassPrototype.from_dict(p) for name, p in (data.get("prototypes") or {}).items()},
        )


def with_image_pixel_thresholds(calibration: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored calibration record (``Calibration.to_dict``) of a version without pixel thresholds
    -> the same with every class's (and the global) ``pixel`` record of the ``image`` rule and its
    ``threshold_rule`` ``quantile``: the migration of checkpoints (schema 3 -> 4) and export
    metadata (layout 2 -> 3). None stays None."""
    if calibration is None:
        return None

    def filled(record: dict[str, Any]) -> dict[str, Any]:
        pixel = PixelRule("image").threshold(record["threshold"]).to_dict()
        return {**record, "pixel": record.get("pixel") or pixel,
                "threshold_rule": record.get("threshold_rule", LEGACY_THRESHOLD_RULE)}

    return {**calibration, "classes": {name: filled(cal) for name, cal in calibration["classes"].items()},
            GLOBAL: filled(calibration[GLOBAL])}


def calibrate_class(
    scores: np.ndarray,
    maps: np.ndarray | list[np.ndarray],
    target_fpr: float,
    pixel_rule: PixelRule = PixelRule(),
    threshold_rule: str = DEFAULT_THRESHOLD_RULE,
) -> ClassCalibration:
    """Scores (N,) and maps (N, H, W) (or N maps of their own sizes, at the model's resolution) of
    normal images -> their :class:`ClassCalibration`: the image threshold by ``threshold_rule``,
    the pixel threshold by ``pixel_rule``."""
    scores = np.asarray(scores, dtype=np.float64)
    threshold = image_threshold(scores, target_fpr, threshold_rule)
    scale = max(float(scores.std()), _MIN_SCALE * max(abs(threshold), 1.0))
    map_low = float(np.median(np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps])))
    return ClassCalibration(threshold, scale, min(map_low, threshold), threshold, len(scores),
                            pixel_rule.threshold(threshold, maps), threshold_rule)


def calibrate(
    class_names: list[str],
    scores: np.ndarray,
    maps: np.ndarray | list[np.ndarray],
    target_fpr: float = DEFAULT_TARGET_FPR,
    pixel_rule: PixelRule = PixelRule(),
    threshold_rule: str = DEFAULT_THRESHOLD_RULE,
    embeddings: np.ndarray | None = None,
) -> Calibration:
    """Validation normals -> :class:`Calibration`.

    class_names: class of each image (N,); scores (N,); maps (N, H, W), or N maps of their own
    sizes, at the model's resolution; pixel_rule / threshold_rule: how the pixel and image
    thresholds are computed; embeddings (N, D): the normals' pooled encoder features, whose class
    prototypes the calibration keeps (None: no prototypes).
    """
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target false-positive rate must be in (0, 1), got {target_fpr}")
    names = np.asarray(class_names)
    classes = {
        name: calibrate_class(scores[names == name], [maps[i] for i in np.flatnonzero(names == name)], target_fpr,
                              pixel_rule, threshold_rule)
        for name in sorted(set(class_names))
    }
    prototypes = {} if embeddings is None else class_prototypes(list(class_names), embeddings)
    return Calibration(target_fpr, classes, calibrate_class(scores, maps, target_fpr, pixel_rule, threshold_rule),
                       prototypes)

"""What scoring images returns: :class:`PredictionResult` for a batch, :class:`ImageResult` per image.

``ImageResult.record()`` is the one per-image record: ``ssmad predict`` writes it as a row (with
the path and overlay) and the HTTP API returns it (with the index, file name and overlay PNG).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ssmad.engine.class_inference import ClassGuess
from ssmad.metrics.defect_regions import DefectRegion


@dataclass
class ImageResult:
    """One image's result; heatmap (H, W) in [0, 1] on its class's fixed display scale."""

    calibration_class: str | None  # the calibration used (None = global)
    score: float
    normalized: float
    threshold: float
    anomalous: bool
    heatmap: np.ndarray
    geometry: str = ""  # the model input size it was scored at, "HxW"
    warnings: list[str] = field(default_factory=list)
    pixel_threshold: float = float("nan")
    mask: np.ndarray | None = None  # (H, W) bool, the defect mask at the image's own size
    regions: list[DefectRegion] = field(default_factory=list)
    class_source: str = ""  # the rule that chose the class: given, folder, only class, inferred, global
    class_guess: ClassGuess | None = None  # the inferred class, where one was inferred

    def record(self) -> dict:
        """``class`` (None = global), ``class_source`` (the rule that chose it: "given", "folder",
        "only class", "inferred" or "global"), ``inferred_class`` and ``class_confidence`` (where a
        class was inferred, also one not used for a low confidence; else None), ``score`` (raw), ``normalized`` (0.5 at the threshold),
        ``threshold``, ``decision`` ("anomalous" or "normal"), ``geometry`` (the input size it was
        scored at), ``warnings`` (e.g. a changed aspect ratio), ``pixel_threshold`` and
        ``regions`` (``DefectRegion.to_dict()`` each, highest peak first), as JSON-ready values."""
        return {
            "class": self.calibration_class,
            "class_source": self.class_source,
            "inferred_class": self.class_guess.name if self.class_guess else None,
            "class_confidence": self.class_guess.confidence if self.class_guess else None,
            "score": self.score,
            "normalized": self.normalized,
            "threshold": self.threshold,
            "decision": "anomalous" if self.anomalous else "normal",
            "geometry": self.geometry,
            "warnings": list(self.warnings),
            "pixel_threshold": self.pixel_threshold,
            "regions": [region.to_dict() for region in self.regions],
        }


@dataclass
class PredictionResult:
    """Predictions for B images (unreadable files are left out and listed in ``skipped``).

    scores (B,) raw image scores; normalized (B,) in (0, 1), 0.5 at the threshold;
    decisions (B,) True = anomalous; maps: B raw anomaly maps (H_i, W_i), each at its image's own
    size; heatmaps: the maps on their class's fixed display scale in [0, 1]; calibration_classes
    (B,) the class whose calibration each image got (None = global); paths (B,) source files (None
    for in-memory images); thresholds (B,); geometries (B,) the model input size each image was
    scored at ("HxW"); warnings (B,) each image's notes (a borrowed geometry, a changed aspect
    ratio); skipped: (path, reason) of inputs that could not be read; pixel_thresholds (B,) the
    threshold each mask was made with; masks: B defect masks (H_i, W_i) bool, at each image's own
    size; regions: each image's defect regions (``ssmad.engine.pixel_decision``); class_sources
    (B,) the rule that chose each image's class, class_guesses (B,) its inferred class or None
    (``ssmad.engine.detector``).
    """

    scores: np.ndarray
    normalized: np.ndarray
    decisions: np.ndarray
    maps: list[np.ndarray]
    heatmaps: list[np.ndarray]
    calibration_classes: list[str | None]
    paths: list[str | None]
    thresholds: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    geometries: list[str] = field(default_factory=list)
    warnings: list[list[str]] = field(default_factory=list)
    pixel_thresholds: np.ndarray | None = None
    masks: list[np.ndarray] = field(default_factory=list)
    regions: list[list[DefectRegion]] = field(default_factory=list)
    class_sources: list[str] = field(default_factory=list)
    class_guesses: list[ClassGuess | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def class_names(self) -> list[str | None]:
        """Deprecated (removed in the next release): use ``calibration_classes``."""
        warnings.warn(
            "PredictionResult.class_names is renamed calibration_classes (the calibration each image got; "
            "Detector.class_names are the trained classes)", DeprecationWarning, stacklevel=2,
        )
        return self.calibration_classes

    def image(self, index: int) -> ImageResult:
        """The result of image ``index``."""
        return ImageResult(
            calibration_class=self.calibration_classes[index],
            score=float(self.scores[index]),
            normalized=float(self.normalized[index]),
            threshold=float(self.thresholds[index]),
            anomalous=bool(self.decisions[index]),
            heatmap=self.heatmaps[index],
            geometry=self.geometries[index] if self.geometries else "",
            warnings=self.warnings[index] if self.warnings else [],
            pixel_threshold=float(self.pixel_thresholds[index]) if self.pixel_thresholds is not None else float("nan"),
            mask=self.masks[index] if self.masks else None,
            regions=self.regions[index] if self.regions else [],
            class_source=self.class_sources[index] if self.class_sources else "",
            class_guess=self.class_guesses[index] if self.class_guesses else None,
        )

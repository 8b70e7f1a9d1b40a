"""PredictionResult: per-image records, and the deprecated ``class_names`` spelling of ``calibration_classes``."""

import numpy as np
import pytest

from ssmad.engine.class_inference import ClassGuess
from ssmad.engine.prediction_result import PredictionResult
from ssmad.metrics.defect_regions import DefectRegion

REGION = DefectRegion(box=(1, 0, 3, 2), area_px=4, area_fraction=4 / 24, peak_score=0.9, mean_score=0.7, centroid=(1.5, 0.5))


def _result() -> PredictionResult:
    return PredictionResult(
        scores=np.array([0.2, 0.9]), normalized=np.array([0.3, 0.8]), decisions=np.array([False, True]),
        maps=[np.zeros((4, 4)), np.zeros((4, 6))], heatmaps=[np.ones((4, 4)), np.ones((4, 6))],
        calibration_classes=["wood", None], paths=[None, None], thresholds=np.array([0.5, 0.6]),
        geometries=["64x64", "64x96"], warnings=[[], ["resized from 6x4 (W x H) to 96x64"]],
        pixel_thresholds=np.array([0.5, 0.6]), masks=[np.zeros((4, 4), bool), np.zeros((4, 6), bool)],
        regions=[[], [REGION]], class_sources=["folder", "global"],
        class_guesses=[None, ClassGuess("nut", similarity=0.9, confidence=0.02, used=False)],
    )


def test_each_image_has_one_record():
    result = _result()
    assert result.image(0).record() == {"class": "wood", "class_source": "folder", "inferred_class": None,
                                        "class_confidence": None, "score": 0.2, "normalized": 0.3, "threshold": 0.5,
                                        "decision": "normal", "geometry": "64x64", "warnings": [],
                                        "pixel_threshold": 0.5, "regions": []}
    assert result.image(1).record() == {"class": None, "class_source": "global", "inferred_class": "nut",
                                        "class_confidence": 0.02, "score": 0.9, "normalized": 0.8, "threshold": 0.6,
                                        "decision": "anomalous", "geometry": "64x96",
                                        "warnings": ["resized from 6x4 (W x H) to 96x64"], "pixel_threshold": 0.6,
                                        "regions": [{"box": [1, 0, 3, 2], "area_px": 4, "area_fraction": 4 / 24,
                                                     "peak_score": 0.9, "mean_score": 0.7, "centroid": [1.5, 0.5]}]}
    assert result.image(1).heatmap.shape == (4, 6)


def test_class_names_is_a_deprecated_alias_of_calibration_classes():
    with pytest.warns(DeprecationWarning, match="calibration_classes"):
        assert _result().class_names == ["wood", None]

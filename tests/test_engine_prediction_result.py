"""PredictionResult: per-image records, and the deprecated ``class_names`` spelling of ``calibration_classes``."""

import numpy as np
import pytest

from ssmad.engine.prediction_result import PredictionResult


def _result() -> PredictionResult:
    return PredictionResult(
        scores=np.array([0.2, 0.9]), normalized=np.array([0.3, 0.8]), decisions=np.array([False, True]),
        maps=np.zeros((2, 4, 4)), heatmaps=np.ones((2, 4, 4)), calibration_classes=["wood", None],
        paths=[None, None], thresholds=np.array([0.5, 0.6]),
    )


def test_each_image_has_one_record():
    result = _result()
    assert result.image(0).record() == {"class": "wood", "score": 0.2, "normalized": 0.3, "threshold": 0.5, "decision": "normal"}
    assert result.image(1).record() == {"class": None, "score": 0.9, "normalized": 0.8, "threshold": 0.6, "decision": "anomalous"}


def test_class_names_is_a_deprecated_alias_of_calibration_classes():
    with pytest.warns(DeprecationWarning, match="calibration_classes"):
        assert _result().class_names == ["wood", None]

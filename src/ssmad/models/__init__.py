"""ssmad.models: the MambaAD and Pyramid-Mamba anomaly detectors.

``build_model("pyramid_mamba" | "mambaad" | ModelConfig, **overrides) -> AnomalyModel``.
"""

from ssmad.models.anomaly_model import AnomalyModel, build_model
from ssmad.models.config import PRESETS, ModelConfig

__all__ = ["PRESETS", "AnomalyModel", "ModelConfig", "build_model"]

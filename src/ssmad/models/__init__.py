"""ssmad.models: the MambaAD and Pyramid-Mamba anomaly detectors.

``build_model("pyramid_mamba" | "mambaad" | ModelConfig, **overrides) -> AnomalyModel``;
``PRESETS[name]``: a :class:`Preset` (model configuration, training recipe, conversion settings).
"""

from ssmad.models.anomaly_model import AnomalyModel, build_model
from ssmad.models.config import ModelConfig
from ssmad.models.presets import DEFAULT_PRESET, PRESETS, Preset, get_preset
from ssmad.models.recipe import Recipe

__all__ = ["DEFAULT_PRESET", "PRESETS", "AnomalyModel", "ModelConfig", "Preset", "Recipe", "build_model", "get_preset"]

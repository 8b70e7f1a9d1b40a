"""The named presets, one record each: the model configuration, the training recipe and the
settings an official checkpoint of that preset is converted with (``ssmad.official.convert``).

Everything that offers or reads a preset (``build_model``, training, conversion, the command
line) looks it up here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ssmad.models.config import ModelConfig
from ssmad.models.recipe import Recipe


@dataclass(frozen=True)
class Preset:
    """One named preset.

    model: the paper's model configuration.
    recipe: optimiser and learning-rate schedule.
    converted: ModelConfig fields over ``model`` that make a converted official checkpoint compute
        what the official code computed (see ``ssmad.official.convert``).
    """

    name: str
    model: ModelConfig
    recipe: Recipe
    converted: Mapping[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    # Pyramid-Mamba (ICME 2025): raster order in 4 directions, 2 pyramid levels, feature noise;
    # the paper's Adam with decay 1e-4, lr 5e-4 constant.
    "pyramid_mamba": Preset(
        "pyramid_mamba",
        ModelConfig(scan_order="sweep", num_directions=4, pyramid_levels=2, noise_std=0.05),
        Recipe(lr=5e-4),
        {"map_scale": "official", "drop_path_rule": "official", "pyramid_levels": 1, "image_score": "max"},
    ),
    # MambaAD (NeurIPS 2024): hybrid scan = Hilbert order in 8 directions, no pyramid, no noise,
    # the cosine loss of its official configuration; lr 5e-3 x batch/16, x0.1 after 80 % of the steps.
    "mambaad": Preset(
        "mambaad",
        ModelConfig(scan_order="hilbert", num_directions=8, pyramid_levels=0, noise_std=0.0, loss="cosine"),
        Recipe(lr=5e-3, lr_scales_with_batch=True, decay_at=0.8),
        {"map_scale": "official", "drop_path_rule": "official", "image_score": "max"},
    ),
}
DEFAULT_PRESET = "pyramid_mamba"


def get_preset(name: str) -> Preset:
    """The preset ``name``; an unknown name is a ValueError naming the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]

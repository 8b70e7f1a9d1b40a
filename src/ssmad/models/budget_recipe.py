"""What a training run with ``--time-budget`` trains with: the one place a budget's recipe is chosen.

A short budget calls for another recipe than the papers' long schedules. Measured
(docs/training.md "Training for a time budget"): at 5 minutes on 2 CPU cores, pyramid_mamba with
the cosine loss beat its own MSE loss on bottle (I-AUROC 99.5 against 91.8, P-AP 72.7 against
13.9) and KolektorSDD (89.2 against 72.6, P-AP 10.7 against 0.7), so a budget trains pyramid_mamba
with the cosine loss; mambaad trains with it already. The learning rate and a warm-up were not
compared: they stay the preset's. ``train.log`` names the recipe a budget uses; ``--lr``,
``--weight-decay`` and ``--set`` (e.g. ``--set loss=mse``) override it as they override a preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ssmad.models.presets import get_preset
from ssmad.models.recipe import Recipe


@dataclass(frozen=True)
class BudgetRecipe:
    """A budget's recipe for one preset: its name (for train.log), optimiser and schedule, and
    ModelConfig fields over the preset's (e.g. ``{"loss": "cosine"}``)."""

    name: str
    recipe: Recipe
    model_overrides: Mapping[str, Any] = field(default_factory=dict)


BUDGET_RECIPES: dict[str, BudgetRecipe] = {  # preset -> its budget recipe where it is not the preset's own
    "pyramid_mamba": BudgetRecipe(
        "the pyramid_mamba preset's with the cosine loss (best measured for short budgets)",
        get_preset("pyramid_mamba").recipe,
        {"loss": "cosine"},
    ),
}


def budget_recipe(preset: str) -> BudgetRecipe:
    """The recipe a ``--time-budget`` run of ``preset`` trains with."""
    if preset in BUDGET_RECIPES:
        return BUDGET_RECIPES[preset]
    return BudgetRecipe(f"the {preset} preset's own", get_preset(preset).recipe)

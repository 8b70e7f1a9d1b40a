"""What a training run with ``--time-budget`` trains with: the one place a budget's recipe is chosen.

A short budget may call for another recipe than the papers' long schedules (the loss, the
learning rate, a warm-up): issue 26 measures which is best for short CPU budgets. Until that
measurement is in, every preset's budget recipe is the preset's own (its ``Recipe`` and no model
change), and ``train.log`` names the recipe a budget uses. ``--lr``, ``--weight-decay`` and
``--set`` override it as they override a preset.
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


BUDGET_RECIPES: dict[str, BudgetRecipe] = {}  # preset -> its budget recipe where it is not the preset's own


def budget_recipe(preset: str) -> BudgetRecipe:
    """The recipe a ``--time-budget`` run of ``preset`` trains with."""
    if preset in BUDGET_RECIPES:
        return BUDGET_RECIPES[preset]
    return BudgetRecipe(f"the {preset} preset's own", get_preset(preset).recipe)

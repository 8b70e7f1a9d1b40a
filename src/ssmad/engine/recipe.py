"""Each preset's optimiser and learning-rate schedule (DESIGN.md section 3).

- ``pyramid_mamba``: the paper's Adam with decay 1e-4 (AdamW here), lr 5e-4, constant, batch 16,
  500 epochs.
- ``mambaad``: the MambaAD configuration as recorded in DESIGN.md: AdamW, lr 5e-3 x batch/16,
  weight decay 1e-4, lr x 0.1 after 80 % of the epochs, batch 16, 500 epochs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """Optimiser (AdamW) settings and a step schedule; ``decay_at`` is a fraction of the epochs."""

    lr: float
    weight_decay: float = 1e-4
    batch_size: int = 16
    epochs: int = 500
    lr_scales_with_batch: bool = False
    decay_at: float | None = None
    decay_factor: float = 0.1

    def base_lr(self, batch_size: int) -> float:
        """The initial learning rate for a (global) batch size."""
        return self.lr * batch_size / 16 if self.lr_scales_with_batch else self.lr

    def lr_at(self, base_lr: float, epoch: int, epochs: int) -> float:
        """The learning rate during ``epoch`` (0-based) of ``epochs``."""
        if self.decay_at is not None and epoch >= int(self.decay_at * epochs):
            return base_lr * self.decay_factor
        return base_lr


RECIPES: dict[str, Recipe] = {
    "pyramid_mamba": Recipe(lr=5e-4),
    "mambaad": Recipe(lr=5e-3, lr_scales_with_batch=True, decay_at=0.8),
}


def recipe_for(preset: str) -> Recipe:
    """The preset's recipe; an unknown preset is an error naming the known ones."""
    if preset not in RECIPES:
        raise ValueError(f"unknown preset '{preset}': use one of {', '.join(RECIPES)}")
    return RECIPES[preset]

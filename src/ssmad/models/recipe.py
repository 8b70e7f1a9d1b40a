"""Each preset's optimiser and learning-rate schedule (docs/design.md, "Training recipe"), as used by ``ssmad.models.presets``.

- ``pyramid_mamba``: the paper's Adam with decay 1e-4 (AdamW here), lr 5e-4, constant, batch 16,
  500 epochs.
- ``mambaad``: the MambaAD configuration as recorded in docs/design.md: AdamW, lr 5e-3 x batch/16,
  weight decay 1e-4, lr x 0.1 after 80 % of the optimiser steps (the official config counts its
  schedule in iterations, ``use_iters=True``), batch 16, 500 epochs.

The schedule is counted in optimiser steps of the run actually asked for (``--epochs``,
``--batch-size``), so a short run (``--epochs 1``) trains its first 80 % at the full rate
instead of starting decayed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """Optimiser (AdamW) settings and a step schedule; ``decay_at`` is a fraction of the steps."""

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

    def decay_step(self, total_steps: int) -> int | None:
        """The first (0-based) optimiser step at the decayed rate; None for a constant rate."""
        return None if self.decay_at is None else int(self.decay_at * total_steps)

    def lr_at(self, base_lr: float, step: int, total_steps: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based) of ``total_steps``."""
        decay_step = self.decay_step(total_steps)
        if decay_step is not None and step >= decay_step:
            return base_lr * self.decay_factor
        return base_lr

    def describe(self, base_lr: float, total_steps: int) -> str:
        """One line saying which steps (1-based) run at which rate."""
        decay_step = self.decay_step(total_steps)
        if decay_step is None or decay_step >= total_steps:
            return f"lr schedule: {base_lr:.2e} constant for all {total_steps} steps"
        return (
            f"lr schedule: {base_lr:.2e} for steps 1-{decay_step}, then x{self.decay_factor:g} "
            f"({base_lr * self.decay_factor:.2e}) for steps {decay_step + 1}-{total_steps}"
        )


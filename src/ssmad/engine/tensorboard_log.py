"""``--log tensorboard``: the training's scalars and heatmaps as TensorBoard event files in ``RUN/tensorboard``.

Scalars: every step's ``train/loss`` and ``train/lr``; every epoch's validation signals
(``val/...``, the keys of ``metrics.jsonl``) and the planned steps of a ``--time-budget``. Images:
the anomaly maps of the first :data:`HEATMAP_IMAGES` validation normals every
:data:`HEATMAP_EVERY` epochs (and at step 0), each divided by the largest value the first of
them held, so later heatmaps show how the maps of normal images fade as the model learns.
Needs the ``tensorboard`` package (extra ``tensorboard``). View: ``tensorboard --logdir RUN``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

LOGGERS = ("tensorboard",)
TENSORBOARD_DIR = "tensorboard"
HEATMAP_IMAGES = 4
HEATMAP_EVERY = 5


def require_tensorboard() -> None:
    """Raise ImportError naming the extra when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ImportError(
            "--log tensorboard needs the tensorboard package: pip install 'ssmad[tensorboard]'"
        ) from None


class TensorBoardLog:
    """A SummaryWriter on ``RUN/tensorboard`` (main process only)."""

    def __init__(self, run_dir: Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR))
        self.heatmap_scale: float | None = None

    def scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        """Every finite number of ``values`` as ``prefix/key`` at ``step``."""
        for key, value in values.items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def heatmaps(self, maps: list[np.ndarray] | np.ndarray, epoch: int, step: int) -> None:
        """The first validation normals' maps (H, W) as grey images, every :data:`HEATMAP_EVERY` epochs."""
        if epoch % HEATMAP_EVERY or len(maps) == 0:
            return
        chosen = [np.asarray(m, np.float32) for m in list(maps)[:HEATMAP_IMAGES]]
        if self.heatmap_scale is None:
            self.heatmap_scale = max(float(max(m.max() for m in chosen)), 1e-12)
        for index, image_map in enumerate(chosen):
            image = torch.from_numpy(np.clip(image_map / self.heatmap_scale, 0, 1))[None]
            self.writer.add_image(f"val_heatmap/{index}", image, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()

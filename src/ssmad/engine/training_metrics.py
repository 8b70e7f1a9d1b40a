"""``RUN/metrics.jsonl``: the machine-readable training log, one JSON object a line.

Two kinds of line:

- ``{"kind": "step", "step", "epoch", "wall_seconds", "loss", "lr"}`` after every optimiser step;
- ``{"kind": "epoch", "step", "epoch", "wall_seconds", "loss", "lr", "val_score_mean",
  "val_score_p99", "val_loss"[, "val_image_auroc", "val_pixel_ap"][, "planned_steps"]}`` after
  every epoch, and once at step 0 (the untrained model's validation; ``loss`` and ``lr`` null).

``step`` counts optimiser steps done, ``epoch`` epochs done; ``wall_seconds`` is the time since
the command began (with ``--time-budget``, the budget spent, earlier processes of a resumed run
included; without, since this process began). A value that is not finite is written as null.
A resumed run first drops the lines past its checkpoint (a process killed after writing them
repeats those steps), then appends.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ssmad.engine.atomic_write import atomic_write_text

METRICS_NAME = "metrics.jsonl"


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl`` (empty when there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class MetricsLog:
    """Appends records to ``RUN/metrics.jsonl`` (main process only: ``enabled``)."""

    def __init__(self, run_dir: Path, enabled: bool, resumed_at_step: int | None = None) -> None:
        self.path = run_dir / METRICS_NAME
        self.enabled = enabled
        if enabled and resumed_at_step is not None and self.path.is_file():
            kept = [record for record in read_metrics(self.path) if record["step"] <= resumed_at_step]
            atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps({key: _finite(value) for key, value in record.items()}) + "\n")

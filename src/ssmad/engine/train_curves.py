"""``RUN/train_curves.png``: the learning curves of a run, drawn from its ``metrics.jsonl``.

Rows: training loss (every step, and each epoch's mean), learning rate, the held-out normals'
reconstruction loss, their image scores (mean and 99th percentile), and with ``--val-data`` the
validation I-AUROC and P-AP. Left column against optimiser steps, right column against wall time.
The losses are drawn on a log scale: they fall by orders of magnitude in the first epoch, and
whether the model is still learning shows in the tail. Needs matplotlib (extra ``plots``); without it nothing is drawn.
"""

from __future__ import annotations

from pathlib import Path

from ssmad.engine.training_metrics import read_metrics

CURVES_NAME = "train_curves.png"
LOG_SCALE_ROWS = ("training loss", "validation normals: loss")
_ROWS = (
    ("training loss", (("loss", "step", "per step"), ("loss", "epoch", "epoch mean"))),
    ("learning rate", (("lr", "step", "lr"),)),
    ("validation normals: loss", (("val_loss", "epoch", "reconstruction loss"),)),
    ("validation normals: image score", (("val_score_mean", "epoch", "mean"), ("val_score_p99", "epoch", "99th percentile"))),
    ("validation set (--val-data)", (("val_image_auroc", "epoch", "I-AUROC"), ("val_pixel_ap", "epoch", "P-AP"))),
)


def matplotlib_available() -> bool:
    """Whether matplotlib (extra ``plots``) can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_train_curves(run_dir: str | Path) -> Path | None:
    """Draw ``RUN/train_curves.png`` from ``RUN/metrics.jsonl``; None without matplotlib or records."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    if not records or not matplotlib_available():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (title, lines) for title, lines in _ROWS
        if any(record.get(key) is not None for key, _, _ in lines for record in records)
    ]
    figure, axes = plt.subplots(len(rows), 2, figsize=(11, 2.4 * len(rows)), squeeze=False)
    for (title, lines), row in zip(rows, axes):
        for key, kind, label in lines:
            points = [r for r in records if r["kind"] == kind and r.get(key) is not None]
            for axis, x_key in zip(row, ("step", "wall_seconds")):
                axis.plot([r[x_key] for r in points], [r[key] for r in points], marker="." if kind == "epoch" else None, label=label)
        row[0].set(ylabel=title)
        if title in LOG_SCALE_ROWS and all(r[key] > 0 for key, _, _ in lines for r in records if r.get(key) is not None):
            for axis in row:
                axis.set_yscale("log")
        for axis in row:
            axis.legend(fontsize=7)
    axes[-1][0].set(xlabel="optimiser step")
    axes[-1][1].set(xlabel="wall time (s)")
    figure.tight_layout()
    path = run_dir / CURVES_NAME
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path

"""Calibrating a model on normal images, outside training: ``ssmad calibrate`` and conversion.

The path is training's own (:meth:`ssmad.engine.trainer.Trainer.calibrate`): the normals held
out by ``build_dataset(..., "val", val_fraction, seed)``, their encoder features cached in
memory, eval-mode maps and scores by ``ssmad.engine.scoring``, thresholds by
:func:`~ssmad.engine.calibration.calibrate`. Given the data, fraction and seed a run was trained
with, it reproduces the run's stored calibration.

``all_normals=True`` calibrates on every normal training image instead: for normals the model
was not trained on (new images after a camera or lighting change).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ssmad.engine.calibration import Calibration, calibrate
from ssmad.engine.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from ssmad.engine.detector import model_from_checkpoint
from ssmad.engine.device import resolve_device
from ssmad.engine.feature_cache import build_feature_source


def calibration_dataset(
    model: torch.nn.Module,
    data: str | Path,
    dataset: str = "auto",
    classes: list[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    all_normals: bool = False,
):
    """The normal images to calibrate ``model`` on: the held-out "val" split, or with
    ``all_normals`` every training normal; resized and normalised for the model's encoder."""
    from ssmad.data import build_dataset

    split, fraction = ("train", 0.0) if all_normals else ("val", val_fraction)
    normals = build_dataset(
        dataset, data, split, classes=classes, image_size=model.config.image_size,
        mean=model.encoder.mean, std=model.encoder.std, val_fraction=fraction, seed=seed,
    )
    empty = [name for name in normals.class_names if name not in {s.class_name for s in normals.samples}]
    if empty:
        raise ValueError(
            f"no calibration normals for class(es) {', '.join(empty)} under {data} "
            f"(val fraction {val_fraction}): pass a larger --val-fraction or --all-normals"
        )
    return normals


@torch.no_grad()
def calibrate_model(
    model: torch.nn.Module, normals, device: torch.device, batch_size: int = 16, target_fpr: float = 0.01
) -> Calibration:
    """Thresholds and heatmap scales of ``model`` (eval mode) from the dataset ``normals``."""
    from ssmad.engine.scoring import score_feature_source

    model = model.to(device).eval()
    source = build_feature_source(model, normals, device, storage="memory", batch_size=batch_size)
    size = (model.config.image_size, model.config.image_size)
    scored = score_feature_source(model, source, device, batch_size, size)
    return calibrate(source.class_names, scored.scores, scored.maps, target_fpr)


def too_few_normals(calibration: Calibration) -> list[str]:
    """"class count" of each class with fewer normals than 1 / target_fpr (a weak threshold)."""
    return [
        f"{name} {cal.num_images}"
        for name, cal in calibration.classes.items()
        if cal.num_images * calibration.target_fpr < 1
    ]


def calibrate_run(
    run: str | Path,
    data: str | Path | None = None,
    dataset: str | None = None,
    classes: list[str] | None = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    target_fpr: float | None = None,
    all_normals: bool = False,
    device: str = "auto",
    batch_size: int | None = None,
) -> Calibration:
    """Re-calibrate a finished run on normals and rewrite its checkpoint; returns the new calibration.

    Every ``None`` takes the run's own value (its training data, dataset kind, classes,
    validation fraction, seed, target false-positive rate and batch size). Recalibrating some
    of the run's classes replaces theirs and keeps the other classes' and the global
    calibration (needs the run's target rate); recalibrating all of them replaces everything.
    """
    payload = load_checkpoint(run)
    if payload["calibration"] is None:
        raise CheckpointError(f"{run} is an unfinished training run: finish it with 'ssmad train --resume' first")
    trained = payload.get("train_config") or {}
    old = Calibration.from_dict(payload["calibration"])
    run_classes = list(payload["class_names"])
    classes = classes or run_classes
    unknown = [name for name in classes if name not in run_classes]
    if unknown:
        raise ValueError(f"class(es) {', '.join(unknown)} are not in this run; it knows {', '.join(run_classes)}")
    target_fpr = old.target_fpr if target_fpr is None else target_fpr
    partial = set(classes) != set(run_classes)
    if partial and target_fpr != old.target_fpr:
        raise ValueError(
            f"recalibrating only {', '.join(classes)} keeps the other classes at target FPR {old.target_fpr}: "
            f"use --target-fpr {old.target_fpr}, or recalibrate every class"
        )
    if data is None and trained.get("data") is None:
        raise ValueError(f"{run} does not record its data: pass --data ROOT")
    model = model_from_checkpoint(payload)
    normals = calibration_dataset(
        model, data or trained["data"], dataset or trained.get("dataset", "auto"), classes,
        trained.get("val_fraction", 0.1) if val_fraction is None else val_fraction,
        trained.get("seed", 0) if seed is None else seed, all_normals,
    )
    new = calibrate_model(model, normals, resolve_device(device), batch_size or trained.get("batch_size") or 16, target_fpr)
    if partial:
        new = Calibration(target_fpr, {**old.classes, **new.classes}, old.overall)
    payload["calibration"] = new.to_dict()
    save_checkpoint(payload, Path(run) / CHECKPOINT_NAME if Path(run).is_dir() else run)
    return new

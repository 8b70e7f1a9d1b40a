"""Calibrating a model on normal images: training's last step, ``ssmad calibrate`` and conversion.

One path (:func:`calibrate_features`): the normals' encoder features (a feature source,
``ssmad.engine.feature_cache``), eval-mode maps and scores by ``ssmad.engine.scoring``,
thresholds by :func:`~ssmad.engine.thresholds.calibrate`. Training calls it on its cached
validation features; :func:`calibrate_model` on the normals ``build_dataset(..., "val",
val_fraction, seed)`` holds out, so given the data, fraction and seed a run was trained with it
reproduces the run's stored calibration.

``all_normals=True`` calibrates on every normal training image instead: for normals the model
was not trained on (new images after a camera or lighting change). Given normals the run was
trained on (e.g. ``--all-normals`` on the run's own data), :func:`calibrate_run` warns, naming
them: their scores are low (the model learnt them), so thresholds set on them are too low and
flag more new normals than the target rate.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ssmad.data.dataset import DEFAULT_VAL_FRACTION, ImageSize
from ssmad.data.geometry import DEFAULT_SIZE_RULE
from ssmad.data.layouts import AUTO_KIND
from ssmad.data.roi import RoiSpecs
from ssmad.engine.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    stored_geometries,
    stored_rois,
)
from ssmad.engine.device import AUTO_DEVICE, resolve_device
from ssmad.engine.feature_cache import FeatureSource, build_feature_source
from ssmad.engine.fpr_intervals import calibration_fpr_interval
from ssmad.engine.pixel_thresholds import PixelRule
from ssmad.engine.rng import DEFAULT_SEED
from ssmad.engine.scoring import SCORING_BATCH_SIZE, TorchEngine, score_feature_source
from ssmad.engine.thresholds import DEFAULT_TARGET_FPR, Calibration, calibrate
from ssmad.engine.tiling import TileGrid, TileSettings, score_tiled
from ssmad.engine.train_config import TrainConfig
from ssmad.models.image_score import parse_image_score


def calibration_dataset(
    model: torch.nn.Module,
    data: str | Path | list[str],
    image_size: ImageSize = DEFAULT_SIZE_RULE,
    dataset: str = AUTO_KIND,
    classes: list[str] | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    all_normals: bool = False,
    rois: RoiSpecs = (),
):
    """The normal images to calibrate ``model`` on: the held-out "val" split, or with
    ``all_normals`` every training normal; cropped to ``rois`` (a run's stored regions of
    interest), brought to ``image_size`` (a run's stored geometries, or a rule) and normalised
    for the model's encoder."""
    from ssmad.data import build_dataset

    split, fraction = ("train", 0.0) if all_normals else ("val", val_fraction)
    normals = build_dataset(
        dataset, data, split, classes=classes, image_size=image_size,
        mean=model.encoder.mean, std=model.encoder.std, val_fraction=fraction, seed=seed, rois=rois,
    )
    empty = [name for name in normals.class_names if name not in {s.class_name for s in normals.samples}]
    if empty:
        raise ValueError(
            f"no calibration normals for class(es) {', '.join(empty)} under {data} "
            f"(val fraction {val_fraction}): pass a larger --val-fraction or --all-normals"
        )
    return normals


@torch.no_grad()
def calibrate_features(
    model: torch.nn.Module, source: FeatureSource, device: torch.device, batch_size: int, target_fpr: float,
    pixel_rule: PixelRule = PixelRule(),
) -> Calibration:
    """Thresholds and heatmap scales of ``model`` (eval-mode maps) from the normals' features ``source``."""
    scored = score_feature_source(model, source, device, batch_size)
    return calibrate(source.class_names, scored.scores, scored.maps, target_fpr, pixel_rule, embeddings=scored.embeddings)


@torch.no_grad()
def calibrate_tiled(
    model: torch.nn.Module, normals, device: torch.device, batch_size: int, target_fpr: float, tile: TileSettings,
    pixel_rule: PixelRule = PixelRule(),
) -> Calibration:
    """Thresholds and heatmap scales of ``model`` from the dataset ``normals``, every image scored in
    ``tile`` tiles and its maps stitched (``ssmad.engine.tiling``), as prediction scores it; its
    embedding (class prototypes) from the whole image, as prediction infers a class."""
    engine = TorchEngine(model, device)
    maps, scores, embeddings = [], [], []
    for index in range(len(normals)):
        image = normals[index]["image"]
        grid = TileGrid(*image.shape[-2:], tile.size, tile.overlap)
        image_map, score = score_tiled(engine, image, grid, batch_size, model.config.image_score)
        maps.append(image_map)
        scores.append(score)
        embeddings.append(engine.embed(image[None]).cpu().numpy())
    names = [sample.class_name for sample in normals.samples]
    return calibrate(names, np.asarray(scores, np.float32), maps, target_fpr, pixel_rule,
                     embeddings=np.concatenate(embeddings) if embeddings else None)


def calibrate_model(
    model: torch.nn.Module,
    normals,
    device: torch.device,
    batch_size: int = SCORING_BATCH_SIZE,
    target_fpr: float = DEFAULT_TARGET_FPR,
    tile: TileSettings | None = None,
    pixel_rule: PixelRule = PixelRule(),
) -> Calibration:
    """Image and pixel thresholds and heatmap scales of ``model`` (put in eval mode) from the
    dataset ``normals``, scored whole or, with ``tile``, in tiles."""
    model = model.to(device).eval()
    if tile is not None:
        return calibrate_tiled(model, normals, device, batch_size, target_fpr, tile, pixel_rule)
    source = build_feature_source(model, normals, device, storage="memory", batch_size=batch_size)
    return calibrate_features(model, source, device, batch_size, target_fpr, pixel_rule)


def too_few_normals(calibration: Calibration) -> list[str]:
    """"class count" of each class whose threshold is expected to flag more new normals than the
    target (``ssmad.engine.fpr_intervals.calibration_fpr_interval``): by the ``conformal`` rule,
    fewer than 1 / target_fpr - 1 normals."""
    return [
        f"{name} {cal.num_images}"
        for name, cal in calibration.classes.items()
        if calibration_fpr_interval(cal.num_images, calibration.target_fpr, cal.threshold_rule).expected
        > calibration.target_fpr + 1e-12
    ]


def too_few_normals_warning(calibration: Calibration) -> str | None:
    """The warning for classes with too few calibration normals (:func:`too_few_normals`), or None."""
    too_few = too_few_normals(calibration)
    if not too_few:
        return None
    return (
        f"too few calibration normals ({', '.join(too_few)}) to show a {calibration.target_fpr:g} false-positive "
        "rate: thresholds are the largest normal score, so new normal images will be flagged more often "
        "(hold out more normals with --val-fraction, or for MVTec AD 2 put more into validation/good; calibrate "
        "on new normals with 'ssmad calibrate RUN --data DIR --all-normals'; or aim at a larger --target-fpr)"
    )


def warn_trained_on(normals, trained: TrainConfig, geometries) -> list[str]:
    """Warn (UserWarning) when calibration ``normals`` include images the run was trained on
    (its training split, rebuilt from its data, validation fraction and seed); returns their paths."""
    from ssmad.data import build_dataset

    try:
        training = build_dataset(trained.dataset, trained.data, "train", classes=trained.classes,
                                 image_size=geometries, val_fraction=trained.val_fraction, seed=trained.seed)
    except (FileNotFoundError, ValueError):  # the training data moved or changed: nothing to compare with
        return []
    seen = {str(Path(sample.path).resolve()) for sample in training.samples}
    overlap = [str(sample.path) for sample in normals.samples if str(Path(sample.path).resolve()) in seen]
    if overlap:
        more = f" and {len(overlap) - 3} more" if len(overlap) > 3 else ""
        warnings.warn(
            f"calibrating on {len(overlap)} normal(s) the model was trained on ({', '.join(overlap[:3])}{more}): "
            "their scores are low, so the thresholds will be too low and flag more new normals than the target "
            "rate; calibrate on held-out normals (without --all-normals) or on new images (--data)",
            UserWarning, stacklevel=2,
        )
    return overlap


def calibrate_run(
    run: str | Path,
    data: str | Path | None = None,
    dataset: str | None = None,
    classes: list[str] | None = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    target_fpr: float | None = None,
    all_normals: bool = False,
    device: str = AUTO_DEVICE,
    batch_size: int | None = None,
    pixel_rule: str | None = None,
    pixel_num_std: float | None = None,
    pixel_fpr: float | None = None,
    image_score: str | None = None,
) -> Calibration:
    """Re-calibrate a finished run on normals and rewrite its checkpoint; returns the new calibration.

    Every ``None`` takes the run's own value (its training data, dataset kind, classes,
    validation fraction, seed, target false-positive rate, pixel rule and its parameters, image
    score rule and batch size). ``image_score`` switches the run to another image score
    (``ssmad.models.image_score``; e.g. a run written before top-1 % means were the default keeps
    the maximum until recalibrated with ``"top_mean:0.01"``). Recalibrating some of the run's
    classes replaces theirs and keeps the other classes' and the global calibration (needs the
    run's target rate, pixel rule and image score); recalibrating all of them replaces everything.
    """
    payload = load_checkpoint(run)
    if payload["calibration"] is None:
        raise CheckpointError(f"{run} is an unfinished training run: finish it with 'ssmad train --resume' first")
    trained = TrainConfig.from_dict({"data": None, "out": str(run), **(payload.get("train_config") or {})})
    old = Calibration.from_dict(payload["calibration"])
    run_classes = list(payload["class_names"])
    classes = classes or run_classes
    unknown = [name for name in classes if name not in run_classes]
    if unknown:
        raise ValueError(f"class(es) {', '.join(unknown)} are not in this run; it knows {', '.join(run_classes)}")
    target_fpr = old.target_fpr if target_fpr is None else target_fpr
    given = {"rule": pixel_rule, "num_std": pixel_num_std, "pixel_fpr": pixel_fpr}
    rule = replace(old.pixel_rule, **{key: value for key, value in given.items() if value is not None})
    partial = set(classes) != set(run_classes)
    if partial and target_fpr != old.target_fpr:
        raise ValueError(
            f"recalibrating only {', '.join(classes)} keeps the other classes at target FPR {old.target_fpr}: "
            f"use --target-fpr {old.target_fpr}, or recalibrate every class"
        )
    if partial and rule != old.pixel_rule:
        raise ValueError(
            f"recalibrating only {', '.join(classes)} keeps the other classes' pixel rule {old.pixel_rule.rule!r}: "
            "leave --pixel-rule and its parameter out, or recalibrate every class"
        )
    score_rule = payload["model_config"]["image_score"] if image_score is None else image_score
    parse_image_score(score_rule)
    if partial and score_rule != payload["model_config"]["image_score"]:
        raise ValueError(
            f"recalibrating only {', '.join(classes)} keeps the other classes' thresholds on image score "
            f"{payload['model_config']['image_score']!r}: leave --image-score out, or recalibrate every class"
        )
    payload["model_config"] = {**payload["model_config"], "image_score": score_rule}
    if data is None and trained.data is None:
        raise ValueError(f"{run} does not record its data: pass --data ROOT")
    model = model_from_checkpoint(payload)
    normals = calibration_dataset(
        model, data or trained.data, stored_geometries(payload), dataset or trained.dataset, classes,
        trained.val_fraction if val_fraction is None else val_fraction,
        trained.seed if seed is None else seed, all_normals, stored_rois(payload),
    )
    if trained.data is not None:
        warn_trained_on(normals, trained, stored_geometries(payload))
    new = calibrate_model(model, normals, resolve_device(device), batch_size or trained.batch_size or SCORING_BATCH_SIZE,
                          target_fpr, TileSettings.from_dict(payload["tile"]), rule)
    if partial:
        new = Calibration(target_fpr, {**old.classes, **new.classes}, old.overall, {**old.prototypes, **new.prototypes})
    payload["calibration"] = new.to_dict()
    save_checkpoint(payload, Path(run) / CHECKPOINT_NAME if Path(run).is_dir() else run)
    return new

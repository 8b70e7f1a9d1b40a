"""``write_run``: a converted model, calibrated on normals, saved as an ssmad run folder.

The run is a checkpoint like a finished training run's (``ssmad.engine.checkpoint``), so
``ssmad test``, ``predict`` and everything that reads runs accept it; its ``train_config``
records the calibration data (``test`` defaults to that dataset) and ``converted_from`` the
official file. Calibration follows training exactly (``ssmad.engine.calibrate_on_normals``).
"""

from __future__ import annotations

from pathlib import Path

from ssmad.data.dataset import DEFAULT_VAL_FRACTION
from ssmad.data.layouts import AUTO_KIND
from ssmad.engine.calibrate_on_normals import calibrate_model, calibration_dataset
from ssmad.engine.pixel_thresholds import PixelRule
from ssmad.engine.checkpoint import CHECKPOINT_NAME, CheckpointError, build_payload, progress_record, save_checkpoint
from ssmad.engine.device import AUTO_DEVICE, resolve_device
from ssmad.engine.rng import DEFAULT_SEED
from ssmad.engine.scoring import SCORING_BATCH_SIZE
from ssmad.data.geometry import DEFAULT_SIZE_RULE
from ssmad.engine.thresholds import DEFAULT_TARGET_FPR, Calibration
from ssmad.engine.train_config import TrainConfig
from ssmad.models import AnomalyModel
from ssmad.modules.encoder_weights import file_sha256


def write_run(
    model: AnomalyModel,
    out: str | Path,
    data: str | Path,
    preset: str,
    source: str | Path,
    dataset: str = AUTO_KIND,
    classes: list[str] | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    target_fpr: float = DEFAULT_TARGET_FPR,
    all_normals: bool = False,
    device: str = AUTO_DEVICE,
    batch_size: int = SCORING_BATCH_SIZE,
    image_size: str = DEFAULT_SIZE_RULE,
    pixel_rule: PixelRule = PixelRule(),
) -> tuple[Path, Calibration]:
    """Calibrate ``model`` on the normals of ``data`` and write ``out/checkpoint.pt``.

    source: the official checkpoint the model was converted from (recorded with its sha256).
    The other arguments select the calibration normals, as ``ssmad train`` does
    (see :func:`~ssmad.engine.calibrate_on_normals.calibration_dataset`). Returns (checkpoint, calibration).
    """
    out = Path(out)
    checkpoint = out / CHECKPOINT_NAME
    if checkpoint.exists():
        raise CheckpointError(f"{checkpoint} already exists: choose another --out")
    normals = calibration_dataset(model, data, image_size, dataset, classes, val_fraction, seed, all_normals)
    calibration = calibrate_model(model, normals, resolve_device(device), batch_size, target_fpr, pixel_rule=pixel_rule)
    config = model.config
    settings = TrainConfig(
        data=str(data), out=str(out), preset=preset, dataset=dataset, classes=classes, image_size=image_size,
        encoder=config.encoder, weights=model.encoder.weights_source, batch_size=batch_size, seed=seed,
        val_fraction=val_fraction, target_fpr=target_fpr, pixel_rule=pixel_rule.rule, pixel_num_std=pixel_rule.num_std,
        pixel_fpr=pixel_rule.pixel_fpr, device=device, model_overrides={},
    )
    payload = build_payload(
        model, preset, list(normals.class_names), settings.to_dict(), progress_record(finished=True),
        geometries=normals.geometries, size_rule=str(image_size), calibration=calibration.to_dict(),
        converted_from={"file": Path(source).name, "sha256": file_sha256(Path(source))},
    )
    return save_checkpoint(payload, checkpoint), calibration

"""``write_run``: a converted model, calibrated on normals, saved as an ssmad run folder.

The run is a checkpoint like a finished training run's (``ssmad.engine.checkpoint``), so
``ssmad test``, ``predict`` and everything that reads runs accept it; its ``train_config``
records the calibration data (``test`` defaults to that dataset) and ``converted_from`` the
official file. Calibration follows training exactly (``ssmad.engine.calibrate_run``).
"""

from __future__ import annotations

from pathlib import Path

import ssmad
from ssmad.engine.calibrate_run import calibrate_model, calibration_dataset
from ssmad.engine.calibration import Calibration
from ssmad.engine.checkpoint import CHECKPOINT_NAME, CheckpointError, save_checkpoint
from ssmad.engine.device import resolve_device
from ssmad.engine.trainer import TrainConfig
from ssmad.models import AnomalyModel
from ssmad.modules.encoder_weights import file_sha256


def write_run(
    model: AnomalyModel,
    out: str | Path,
    data: str | Path,
    preset: str,
    source: str | Path,
    dataset: str = "auto",
    classes: list[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    target_fpr: float = 0.01,
    all_normals: bool = False,
    device: str = "auto",
    batch_size: int = 16,
) -> tuple[Path, Calibration]:
    """Calibrate ``model`` on the normals of ``data`` and write ``out/checkpoint.pt``.

    source: the official checkpoint the model was converted from (recorded with its sha256).
    The other arguments select the calibration normals, as ``ssmad train`` does
    (see :func:`~ssmad.engine.calibrate_run.calibration_dataset`). Returns (checkpoint, calibration).
    """
    out = Path(out)
    checkpoint = out / CHECKPOINT_NAME
    if checkpoint.exists():
        raise CheckpointError(f"{checkpoint} already exists: choose another --out")
    normals = calibration_dataset(model, data, dataset, classes, val_fraction, seed, all_normals)
    calibration = calibrate_model(model, normals, resolve_device(device), batch_size, target_fpr)
    config = model.config
    settings = TrainConfig(
        data=str(data), out=str(out), preset=preset, dataset=dataset, classes=classes, image_size=config.image_size,
        encoder=config.encoder, weights=model.encoder.weights_source, batch_size=batch_size, seed=seed,
        val_fraction=val_fraction, target_fpr=target_fpr, device=device, model_overrides={},
    )
    encoder = model.encoder
    payload = {
        "ssmad_version": ssmad.__version__,
        "preset": preset,
        "model_config": config.to_dict(),
        "encoder": {
            "name": config.encoder,
            "weights_source": Path(encoder.weights_source).name,
            "weights_sha256": encoder.weights_sha256,
        },
        "encoder_state": encoder.state_dict(),
        "trainable_state": model.trainable_state_dict(),
        "class_names": list(normals.class_names),
        "normalization": {"mean": list(encoder.mean), "std": list(encoder.std)},
        "image_size": config.image_size,
        "calibration": calibration.to_dict(),
        "train_config": settings.to_dict(),
        "progress": {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "epoch_losses": [], "step_losses": [],
                     "finished": True, "world_size": 1},
        "converted_from": {"file": Path(source).name, "sha256": file_sha256(Path(source))},
    }
    return save_checkpoint(payload, checkpoint), calibration

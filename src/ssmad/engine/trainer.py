"""Training: one model on the normal images of every class (multi-class), then calibration.

One optimiser step uses a global batch of ``batch_size`` training images, drawn in an order that
depends only on (seed, epoch). The batch is cut into ``world_size * accumulate`` equal
micro-batches: each process (DDP rank) runs ``accumulate`` of them and accumulates gradients, so
the update is the same for any split of the global batch (up to batch-norm statistics, which are
per micro-batch). Encoder features come from a :mod:`feature cache <ssmad.engine.feature_cache>`.

The checkpoint (``RUN/checkpoint.pt``, :mod:`ssmad.engine.checkpoint`) is rewritten atomically
every ``checkpoint_every`` epochs, when ``max_steps`` is reached or the run is interrupted
(Ctrl-C), and at the end with the calibration. Until the run finishes it holds the optimiser,
the RNG states of every process and the position in the epoch, so ``resume`` finishes with
exactly the weights an uninterrupted run gives; the finished run's checkpoint leaves them out.

The run lasts ``epochs`` epochs (``steps_per_epoch x epochs`` optimiser steps) or, with a
``time_budget``, the steps a :class:`~ssmad.engine.time_budget.BudgetPlanner` plans and re-plans
at every epoch. After every epoch (and once before the first step) the held-out normals are
validated (``ssmad.engine.validation``): their scores and loss go to ``train.log`` and
``RUN/metrics.jsonl`` (``ssmad.engine.training_metrics``), and the last pass's scores are the
calibration's. ``RUN/train_curves.png`` (``ssmad.engine.train_curves``) is drawn when training
ends, stops or is interrupted; ``--log tensorboard`` also writes ``RUN/tensorboard``.

The settings are a :class:`~ssmad.engine.train_config.TrainConfig`; seeding and RNG state are
in ``ssmad.engine.rng``, mixed precision in ``ssmad.engine.amp``, DDP in
``ssmad.engine.distributed`` and the calibration in ``ssmad.engine.calibrate_on_normals``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ssmad.data.image_io import printable
from ssmad.data.screening import screen_samples
from ssmad.engine.amp import autocast, check_amp, grad_scaler
from ssmad.engine.atomic_write import FileWriteError, atomic_write_text
from ssmad.engine.calibrate_on_normals import calibrate_tiled, too_few_normals_warning
from ssmad.engine.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    build_payload,
    load_checkpoint,
    model_from_checkpoint,
    progress_record,
    save_checkpoint,
    stored_geometries,
    stored_rois,
)
from ssmad.engine.device import resolve_device
from ssmad.engine.distributed import (
    DistributedContext,
    any_process,
    barrier,
    distributed_device,
    gather_objects,
    init_distributed,
    trainable_network,
)
from ssmad.engine.feature_cache import FeatureSource, build_feature_source, cache_key, open_disk_cache
from ssmad.engine.fpr_intervals import calibration_fpr_interval
from ssmad.engine.interrupts import StopRequests
from ssmad.engine.optimizer import build_optimizer
from ssmad.engine.preflight import check_cache, check_data, check_out_folder, check_settings, feature_bytes
from ssmad.engine.rng import epoch_batches, rng_state, seed_everything, set_rng_state
from ssmad.engine.tensorboard_log import TensorBoardLog, require_tensorboard
from ssmad.engine.thresholds import Calibration, calibrate
from ssmad.engine.tile_dataset import TileDataset
from ssmad.engine.tiling import TileSettings
from ssmad.engine.time_budget import BudgetPlanner, check_budget_flags, format_duration
from ssmad.engine.train_config import TrainConfig
from ssmad.engine.train_curves import matplotlib_available, write_train_curves
from ssmad.engine.train_log import make_logger
from ssmad.engine.training_files import check_unchanged, record_files
from ssmad.engine.training_metrics import MetricsLog, read_metrics
from ssmad.engine.validation import LabelledValidation, NormalsValidation, check_val_data, validate_normals
from ssmad.models.budget_recipe import budget_recipe
from ssmad.models.image_score import describe_image_score
from ssmad.models.presets import get_preset

__all__ = ["TrainConfig", "TrainResult", "Trainer", "TrainingDiverged", "resume_config", "train"]


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the last checkpoint on disk is left as it was."""


@dataclass
class TrainResult:
    """What a run produced: its checkpoint, whether it finished, losses and timings (seconds)."""

    run_dir: Path
    checkpoint: Path
    finished: bool
    epoch_losses: list[float]
    cache_seconds: float
    train_seconds: float
    global_step: int


class Trainer:
    """Builds the model, data and feature caches of a :class:`TrainConfig` and trains it.

    ``resume=True`` continues the run in ``config.out`` (see :func:`resume_config`). The encoder
    is then rebuilt from the weights stored in the checkpoint, never from the weights path the run
    recorded: the file there may have changed or moved, and the run must go on with the
    network it started with.

    ``clock`` (seconds, monotonic) times the run for a ``time_budget``; its reading at
    construction is the command's start.
    """

    def __init__(
        self,
        config: TrainConfig,
        context: DistributedContext | None = None,
        resume: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        from ssmad.data import build_dataset
        from ssmad.models import build_model

        self.clock = clock
        self.started = clock()
        self.config = config
        self.resume = resume
        check_settings(config.val_fraction, config.target_fpr)
        self.pixel_rule = config.pixel  # refuses an unknown pixel rule before any work
        check_budget_flags(config.time_budget, config.epochs, config.max_steps)
        if config.log is not None:
            require_tensorboard()
        if config.val_data is not None:
            check_val_data(config.val_data, config.roots)
        chosen = budget_recipe(config.preset) if config.time_budget is not None else None
        self.recipe = chosen.recipe if chosen else get_preset(config.preset).recipe
        self.recipe_name = chosen.name if chosen else f"the {config.preset} preset's"
        replaced = [key for key in (chosen.model_overrides if chosen else {}) if key in config.model_overrides]
        if replaced:
            self.recipe_name += ", with " + ", ".join(f"{key}={config.model_overrides[key]} from --set" for key in replaced)
        device = resolve_device(config.device)
        self.context = context or init_distributed(device)
        self.device = distributed_device(device, self.context)
        check_amp(config.amp)
        self.epochs = config.epochs or self.recipe.epochs
        self.batch_size = config.batch_size or self.recipe.batch_size
        splits = self.context.world_size * config.accumulate
        if self.batch_size % splits:
            raise ValueError(
                f"batch size {self.batch_size} must be a multiple of processes x --accumulate = {splits}"
            )
        self.micro_batch = self.batch_size // splits
        self.lr = config.lr or self.recipe.base_lr(self.batch_size)
        self.weight_decay = self.recipe.weight_decay if config.weight_decay is None else config.weight_decay
        self.run_dir = Path(config.out)
        self.checkpoint_file = self.run_dir / CHECKPOINT_NAME

        seed_everything(config.seed, config.deterministic)  # the same initial weights (and random encoder) on every rank
        self.resume_payload = self._resume_payload() if resume else None
        if self.resume_payload is not None:
            self.model = model_from_checkpoint(self.resume_payload).to(self.device)
        else:
            overrides = {**(chosen.model_overrides if chosen else {}), **config.model_overrides}
            if config.encoder is not None:
                overrides["encoder"] = config.encoder
            if config.weights is not None:
                overrides["encoder_weights"] = config.weights
            self.model = build_model(config.preset, **overrides).to(self.device)
        encoder = self.model.encoder
        data_args = dict(
            classes=config.classes,
            image_size=config.image_size if self.resume_payload is None else stored_geometries(self.resume_payload),
            rois=config.roi if self.resume_payload is None else stored_rois(self.resume_payload),
            mean=encoder.mean,
            std=encoder.std,
            val_fraction=config.val_fraction,
            seed=config.seed,
        )
        self.train_set = build_dataset(config.dataset, config.data, "train", **data_args)
        # the geometries the training set measured (long:N reads every normal's size once, not twice)
        self.val_set = build_dataset(
            config.dataset, config.data, "val", **{**data_args, "image_size": self.train_set.geometries, "rois": self.train_set.rois}
        )
        self.class_names = list(self.train_set.class_names)
        check_out_folder(self.run_dir)
        self.log = make_logger(self.run_dir, self.context.is_main)
        self.data_files = self._usable_files()
        self.tile = None if config.tile is None else TileSettings(config.tile, config.tile_overlap)
        self.train_items = (
            self.train_set if self.tile is None else TileDataset(self.train_set, self.tile, config.tile_crops, config.seed)
        )
        self.random_crops = self.tile is not None and config.tile_crops == "random"
        check_data(
            [s.class_name for s in self.train_set.samples], [s.class_name for s in self.val_set.samples],
            self._group_sizes(), self.batch_size, config.data,
        )
        cache_root = Path(config.cache_dir) if config.cache_dir else self.run_dir / "feature_cache"
        self.cache_dir = cache_root / f"rank{self.context.rank}"
        to_compute = [
            dataset.geometry(i) for dataset, part in ((self.train_items, "train"), (self.val_set, "val"))
            if config.cache != "disk" or open_disk_cache(self.cache_dir / part, cache_key(self.model, dataset))[0] is None
            for i in range(len(dataset))
        ]
        check_cache(config.cache, feature_bytes(encoder, to_compute), self.cache_dir)
        self.optimizer = build_optimizer(self.model, self.lr, self.weight_decay)
        self.network: nn.Module = trainable_network(self.model, self.context, self.device)
        seed_everything(config.seed + self.context.rank)  # each rank its own noise and drop-path stream
        self.scaler = grad_scaler(config.amp, self.device)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_losses: list[float] = []
        self.step_losses: list[float] = []  # losses of the current epoch's steps so far
        self.planner: BudgetPlanner | None = None  # with a time budget, from fit()
        self.steps_per_epoch = 0
        self.last_validation: tuple[int, NormalsValidation] | None = None  # (global step, pass)
        self.metrics: MetricsLog | None = None
        self.tensorboard: TensorBoardLog | None = None
        self.wall_offset = 0.0  # wall seconds of earlier processes of the run (without a budget)

    def _usable_files(self) -> dict[str, Any]:
        """Keep the usable training and validation images; returns the checkpoint's record of them.

        A new run decodes every file once and leaves out (naming them) the unusable ones; a
        resumed run checks that the files are those it recorded (:mod:`ssmad.engine.training_files`).
        """
        listed = [*self.train_set.samples, *self.val_set.samples]
        recorded = self.resume_payload.get("data_files") if self.resume_payload is not None else None
        if recorded is not None:
            usable, rejected = check_unchanged(recorded, listed, self.checkpoint_file), []
        else:
            usable, rejected = screen_samples(listed)
            for path, reason in rejected:
                self.log.warning("left out unusable training image %s: %s", printable(path), printable(reason))
        kept = {id(sample) for sample in usable}
        for dataset in (self.train_set, self.val_set):
            dataset.samples = [sample for sample in dataset.samples if id(sample) in kept]
        return record_files(usable, rejected) if recorded is None else recorded

    # ----------------------------------------------------------------- checkpoints
    def _payload(self, calibration: Calibration | None, finished: bool) -> dict[str, Any]:
        """This run's checkpoint (``ssmad.engine.checkpoint``); every process must call it."""
        resume_state = None
        if not finished:  # what --resume needs: optimiser, loss scaler and every process's RNG streams
            resume_state = {
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": gather_objects(rng_state(), self.context),
            }
        progress = progress_record(
            self.epoch, self.step_in_epoch, self.global_step, self.epoch_losses, self.step_losses, finished,
            self.context.world_size,
        )
        return build_payload(
            self.model, self.config.preset, self.class_names, self.config.to_dict(), progress,
            geometries=self.train_set.geometries, size_rule=str(self.config.image_size),
            tile=None if self.tile is None else self.tile.to_dict(),
            calibration=calibration.to_dict() if calibration else None, resume_state=resume_state,
            data_files=self.data_files, rois=self.train_set.rois,
            budget=self.planner.record(self.global_step, self.epoch) if self.planner else None,
        )

    def save(self, calibration: Calibration | None = None, finished: bool = False) -> None:
        """Write the checkpoint (main process only; every process must call it)."""
        started = self.clock()
        payload = self._payload(calibration, finished)
        if self.context.is_main:
            save_checkpoint(payload, self.checkpoint_file)
        barrier(self.context)
        if self.planner is not None:
            self.planner.record_save(self.clock() - started)

    def _resume_payload(self) -> dict[str, Any]:
        """The checkpoint to continue, checked to be unfinished and of this job's process count."""
        payload = load_checkpoint(self.checkpoint_file, expected_preset=self.config.preset)
        progress = payload["progress"]
        if progress["finished"]:
            raise CheckpointError(f"{self.checkpoint_file} is a finished run: nothing to resume")
        if progress["world_size"] != self.context.world_size:
            raise CheckpointError(
                f"{self.checkpoint_file} was written by {progress['world_size']} process(es); "
                f"resume it with the same number (now {self.context.world_size})"
            )
        return payload

    def restore(self) -> None:
        """Continue from the checkpoint read at construction: weights, optimiser, position, RNG streams."""
        payload = self.resume_payload
        progress = payload["progress"]
        self.model.load_trainable_state_dict(payload["trainable_state"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        self.epoch = progress["epoch"]
        self.step_in_epoch = progress["step_in_epoch"]
        self.global_step = progress["global_step"]
        self.epoch_losses = list(progress["epoch_losses"])
        self.step_losses = list(progress["step_losses"])
        set_rng_state(payload["rng"][self.context.rank])
        self.resume_payload = None  # the optimiser state lives on in the optimiser; free the copy
        identity = payload["encoder"]
        self.log.info(
            "resumed %s at epoch %d, step %d; encoder weights from the checkpoint (%s, sha256 %s)",
            self.checkpoint_file, self.epoch + 1, self.step_in_epoch, identity["weights_source"], identity["weights_sha256"],
        )

    # ----------------------------------------------------------------- training
    def _step(self, source: FeatureSource, indices: torch.Tensor) -> float:
        """One optimiser step on the global batch ``indices`` (batch_size,); returns its mean loss."""
        cfg = self.config
        chunks = indices.view(-1, self.micro_batch)
        mine = chunks[self.context.rank * cfg.accumulate : (self.context.rank + 1) * cfg.accumulate]
        total = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for i, chunk in enumerate(mine):
            last = i == len(mine) - 1
            sync = self.network.no_sync() if self.context.enabled and not last else nullcontext()
            features = source.batch(chunk, self.device)
            with sync:
                with autocast(cfg.amp, self.device):
                    decoded = self.network(features)
                    loss = self.model.loss(features, decoded) / cfg.accumulate
                self.scaler.scale(loss).backward()
            total += float(loss.detach())
        if any_process(not np.isfinite(total), self.context, self.device):  # every rank stops together
            raise TrainingDiverged(
                f"the training loss is not finite ({total} on this process) at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}: "
                f"training stopped, {self.checkpoint_file} keeps the last checkpointed state (if any). "
                "Fix: a lower --lr, --grad-clip 1.0, or --amp none"
            )
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total

    def fit(self) -> TrainResult:
        """Train (or continue) to the last planned step, calibrate, write the final checkpoint."""
        cfg = self.config
        if not self.resume and self.checkpoint_file.exists():
            raise CheckpointError(
                f"{self.checkpoint_file} already exists: continue it with --resume, or choose another --out"
            )
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "train_config.json", json.dumps(cfg.to_dict(), indent=2))
        self.log.info(
            "preset %s, classes %s, %d train / %d val images, device %s, %d process(es), encoder weights %s",
            cfg.preset, ",".join(f"{name} ({geometry})" for name, geometry in self.train_set.geometries.items()),
            len(self.train_set), len(self.val_set),
            self.device, self.context.world_size, self.model.encoder.weights_source,
        )
        length = f"time budget {format_duration(cfg.time_budget)}" if cfg.time_budget else f"epochs {self.epochs}"
        self.log.info(
            "%s, batch %d (micro-batch %d), AdamW lr %g wd %g, cache %s; recipe: %s",
            length, self.batch_size, self.micro_batch, self.lr, self.weight_decay, cfg.cache, self.recipe_name,
        )
        if self.tile is not None:
            self.log.info(
                "tiles %d (overlap %d): %d training items per epoch, %s", self.tile.size, self.tile.overlap,
                len(self.train_items), "random crops (encoder every step, not cached)" if self.random_crops else "every grid tile",
            )
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):  # a reused cache and a computed one leave the same RNG state
            train_source = self._source(self.train_items, self.cache_dir / "train", "none" if self.random_crops else cfg.cache)
            val_source = self._source(self.val_set, self.cache_dir / "val", cfg.cache)
        cache_seconds = time.perf_counter() - start
        self.log.info(
            "encoder features of %d images cached (%s) in %.1f s: train %s, val %s", len(train_source) + len(val_source),
            cfg.cache, cache_seconds, train_source.origin, val_source.origin,
        )
        budget_record = self.resume_payload["budget"] if self.resume_payload is not None else None
        if self.resume:
            self.restore()
        self.steps_per_epoch = len(self._epoch_batches(0))
        self._open_logs(budget_record)
        labelled = self._labelled_validation()

        start = time.perf_counter()
        if self.planner is None:
            self.log.info("%s", self.recipe.describe(self.lr, self._total_steps()))
        elif self.planner.plan is not None:
            self.log.info("resumed with %s of the time budget spent; plan kept until this process has timed its steps: %s",
                          format_duration(self.planner.spent_before), self.planner.plan.describe(cfg.time_budget, self.steps_per_epoch))
        try:
            finished = self._train_and_calibrate(train_source, val_source, labelled)
        finally:
            self._close_logs()
        train_seconds = time.perf_counter() - start
        if finished:
            self.log.info("finished in %.1f s; checkpoint %s", train_seconds, self.checkpoint_file)
            self._log_budget_outcome()
        return TrainResult(
            self.run_dir, self.checkpoint_file, finished, self.epoch_losses, cache_seconds, train_seconds, self.global_step
        )

    def _train_and_calibrate(self, train_source: FeatureSource, val_source: FeatureSource, labelled: LabelledValidation | None) -> bool:
        """Train from the current position, calibrate and write the finished checkpoint; False when
        ``max_steps`` stopped the run early. Ctrl-C and failures leave a checkpoint to resume."""
        try:
            if not self.resume:
                self._validate(val_source, labelled, loss=None)
            finished = self._train_epochs(train_source, val_source, labelled)
            if finished:
                calibration = self.calibrate(val_source)
        except KeyboardInterrupt:
            self.save()
            self.log.info("interrupted: checkpoint written to %s; continue with --resume", self.checkpoint_file)
            raise
        except TrainingDiverged:
            raise
        except Exception as error:
            self._save_after_failure(error)
            raise
        if finished:
            self.save(calibration, finished=True)
        return finished

    # ----------------------------------------------------------------- budget, validation, logs
    def _open_logs(self, budget_record: dict[str, Any] | None) -> None:
        """The budget planner, ``metrics.jsonl`` and TensorBoard, once the position is restored."""
        cfg = self.config
        if cfg.time_budget is not None:
            self.planner = BudgetPlanner(
                cfg.time_budget, self.steps_per_epoch, len(self.val_set), self.recipe.decay_at,
                clock=self.clock, started=self.started, record=budget_record,
            )
        self.metrics = MetricsLog(self.run_dir, self.context.is_main, self.global_step if self.resume else None)
        if self.resume:
            kept = read_metrics(self.metrics.path)
            self.wall_offset = kept[-1]["wall_seconds"] if kept else 0.0
        if cfg.log == "tensorboard" and self.context.is_main:
            self.tensorboard = TensorBoardLog(self.run_dir)

    def _close_logs(self) -> None:
        """Draw ``train_curves.png`` and close TensorBoard (main process)."""
        if not self.context.is_main or self.metrics is None:
            return
        if self.tensorboard is not None:
            self.tensorboard.close()
        if write_train_curves(self.run_dir) is None and not matplotlib_available():
            self.log.info("train_curves.png not drawn: matplotlib is missing (pip install 'ssmad[plots]')")

    def _labelled_validation(self) -> LabelledValidation | None:
        """The ``--val-data`` set (main process), its features cached once."""
        from ssmad.data import build_dataset

        if self.config.val_data is None or not self.context.is_main:
            return None
        dataset = build_dataset(
            self.config.dataset, self.config.val_data, "test", classes=self.class_names,
            image_size=self.train_set.geometries, mean=self.model.encoder.mean, std=self.model.encoder.std,
        )
        with torch.random.fork_rng(devices=[]):
            labelled = LabelledValidation(self.model, dataset, self.device, self.batch_size)
        self.log.info("validation set %s: %d images (I-AUROC and P-AP every epoch)", self.config.val_data, len(labelled))
        return labelled

    def _wall_seconds(self) -> float:
        """Seconds since the run began: the budget spent, or this process's time after earlier ones'."""
        return self.planner.elapsed() if self.planner else self.wall_offset + self.clock() - self.started

    def _total_steps(self) -> int:
        """The steps the run trains: ``epochs`` of them, or the budget's plan (unbounded before the first)."""
        if self.planner is None:
            return self.steps_per_epoch * self.epochs
        return self.planner.plan.total_steps if self.planner.plan else 2**62

    def _planned_epochs(self) -> str:
        total = self._total_steps()
        return "?" if total == 2**62 else str(math.ceil(total / self.steps_per_epoch))

    def _replan(self, reason: str) -> None:
        """Plan the budget's steps again; under DDP every process takes the main process's plan."""
        plan = self.planner.replan(self.global_step, self.step_in_epoch, reason)
        self.planner.adopt(gather_objects(plan.total_steps, self.context)[0])
        self.log.info("%s", plan.describe(self.config.time_budget, self.steps_per_epoch))
        if plan.warning:
            self.log.warning("%s", plan.warning)
        self.log.info("%s", self.recipe.describe(self.lr, plan.total_steps))

    def _planned_end(self, epoch_started: float, steps_this_epoch: int) -> str:
        """Clock time the run is planned (with a budget) or estimated (from this epoch's steps) to end."""
        if self.planner is not None:
            left = self.planner.planned_end_in()
        else:
            per_step = (self.clock() - epoch_started) / max(steps_this_epoch, 1)
            left = per_step * (self._total_steps() - self.global_step)
        return (datetime.now() + timedelta(seconds=left)).strftime("%H:%M:%S")

    def _validate(self, source: FeatureSource, labelled: LabelledValidation | None, loss: float | None) -> dict[str, float]:
        """Validate the current weights: the normals' signals (and ``--val-data``'s metrics), logged
        with the training ``loss`` of the epoch that just ended (None before the first step)."""
        started = self.clock()
        with torch.random.fork_rng(devices=[]):
            validation = validate_normals(self.model, source, self.device, self.batch_size)
        inference_seconds = self.clock() - started
        signals = validation.signals()
        if labelled is not None:
            with torch.random.fork_rng(devices=[]):
                signals.update(labelled.evaluate(self.model))
        self.model.train()
        self.last_validation = (self.global_step, validation)
        if self.planner is not None:
            self.planner.record_inference(inference_seconds, len(source))
        record = {
            "kind": "epoch", "step": self.global_step, "epoch": self.epoch, "wall_seconds": self._wall_seconds(),
            "loss": loss, "lr": self.optimizer.param_groups[0]["lr"] if self.global_step else None, **signals,
        }
        if self.planner is not None and self.planner.plan is not None:
            record["planned_steps"] = self.planner.plan.total_steps
        self.metrics.write(record)
        if self.tensorboard is not None:
            self.tensorboard.scalars("val", signals, self.global_step)
            self.tensorboard.heatmaps(validation.scored.maps, self.epoch, self.global_step)
        self.log.info("validation at step %d: %s", self.global_step, ", ".join(f"{k} {v:.5g}" for k, v in signals.items()))
        return signals

    def _log_budget_outcome(self) -> None:
        """The budget held, and the flags that train the same steps without a budget."""
        if self.planner is None:
            return
        spent, budget = self.planner.elapsed(), self.config.time_budget
        steps, epochs = self.global_step, self.epoch
        if steps % self.steps_per_epoch == 0:
            again = f"--epochs {epochs} trains the same steps without a budget"
        else:
            again = (f"the last epoch ended after {steps % self.steps_per_epoch} of {self.steps_per_epoch} steps; "
                     f"--epochs {epochs} --max-steps {steps} trains the same steps without a budget (then stops unfinished)")
        self.log.info(
            "time budget %s: %d steps in %d epoch(s), calibrated after %.1f s (%.0f %% of the budget); %s",
            format_duration(budget), steps, epochs, spent, 100 * spent / budget, again,
        )

    def _save_after_failure(self, error: Exception) -> None:
        """Keep the training done so far when something fails after training started.

        The step counters only move once a step is complete, so the checkpoint resumes at the
        first step (or the calibration) that did not finish. A failure of the checkpoint write
        itself is not retried: the previous checkpoint is still on disk.
        """
        if isinstance(error, FileWriteError):
            return
        self.save()
        self.log.error(
            "%s: %s; checkpoint written to %s (step %d); fix the cause, then continue with "
            "ssmad train --resume --out %s", type(error).__name__, error, self.checkpoint_file, self.global_step, self.run_dir,
        )

    def _source(self, dataset, directory: Path, storage: str) -> FeatureSource:
        return build_feature_source(
            self.model, dataset, self.device, storage=storage, directory=directory,
            batch_size=self.batch_size, num_workers=self.config.num_workers, show_progress=self.context.is_main,
        )

    def _train_epochs(self, source: FeatureSource, val_source: FeatureSource, labelled: LabelledValidation | None) -> bool:
        """Run epochs from the current position; False when ``max_steps`` stopped the run early.

        Ctrl-C and SIGTERM take effect between steps only, on every process after the same
        step (:class:`~ssmad.engine.interrupts.StopRequests`), as a KeyboardInterrupt.
        """
        with StopRequests(self.context, self.device) as stops:
            return self._run_epochs(source, val_source, labelled, stops)

    def _run_epochs(self, source: FeatureSource, val_source: FeatureSource, labelled: LabelledValidation | None, stops: StopRequests) -> bool:
        cfg = self.config
        steps_per_epoch = self.steps_per_epoch
        while self.global_step < self._total_steps():
            self.model.train()
            if self.random_crops:
                self.train_items.set_epoch(self.epoch)
            batches = self._epoch_batches(self.epoch)
            bar = tqdm(
                total=steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{self._planned_epochs()}",
                disable=not self.context.is_main, leave=False,
            )
            started, first_step = self.clock(), self.step_in_epoch
            losses = self.step_losses
            while self.step_in_epoch < steps_per_epoch and self.global_step < self._total_steps():
                if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                    bar.close()
                    self.save()
                    self.log.info("stopped after %d steps (max_steps); checkpoint %s", self.global_step, self.checkpoint_file)
                    return False
                lr = self.recipe.lr_at(self.lr, self.global_step, self._total_steps())
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                if self.planner is not None:
                    self.planner.step_begins()
                losses.append(self._step(source, batches[self.step_in_epoch]))
                self.step_in_epoch += 1
                self.global_step += 1
                if self.planner is not None:
                    self.planner.step_ends()
                self._record_step(losses[-1], lr)
                stops.agreed()  # a checkpoint never holds half a step
                if self.planner is not None and self.planner.due:
                    self._replan(f"plan after timing {len(self.planner.step_times)} steps")
                    bar.set_description(f"epoch {self.epoch + 1}/{self._planned_epochs()}")
                end = self._planned_end(started, self.step_in_epoch - first_step)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}", end=end)
                bar.update()
            bar.close()
            self._end_epoch(val_source, labelled, self.clock() - started)
            stops.agreed()
        return True

    def _record_step(self, loss: float, lr: float) -> None:
        """One step's line of ``metrics.jsonl`` (and TensorBoard)."""
        self.metrics.write({
            "kind": "step", "step": self.global_step, "epoch": self.epoch, "wall_seconds": self._wall_seconds(),
            "loss": loss, "lr": lr,
        })
        if self.tensorboard is not None:
            self.tensorboard.scalars("train", {"loss": loss, "lr": lr}, self.global_step)

    def _end_epoch(self, val_source: FeatureSource, labelled: LabelledValidation | None, seconds: float) -> None:
        """Close an epoch (the last one may be partial): its loss, validation, log line, checkpoint, re-plan."""
        ended = self.clock()
        losses = self.step_losses
        self.epoch_losses.append(float(np.mean(losses)) if losses else float("nan"))
        self.epoch += 1
        self.step_in_epoch = 0
        self.step_losses = []
        signals = self._validate(val_source, labelled, loss=self.epoch_losses[-1])
        last = self.global_step >= self._total_steps()
        remaining = (self._total_steps() - self.global_step) / self.steps_per_epoch
        self.log.info(
            "epoch %d/%s loss %.5f lr %.2e %.1f s (%.1f img/s) eta %.0f s; val score mean %.5g p99 %.5g loss %.5g",
            self.epoch, self._planned_epochs(), self.epoch_losses[-1], self.optimizer.param_groups[0]["lr"], seconds,
            max(len(losses), 1) * self.batch_size / max(seconds, 1e-9),
            self.planner.planned_end_in() if self.planner else seconds * remaining,
            signals["val_score_mean"], signals["val_score_p99"], signals["val_loss"],
        )
        if self.epoch % self.config.checkpoint_every == 0 and not last:
            self.save()
        if self.planner is not None:
            self.planner.record_epoch_end(self.clock() - ended)
            if self.planner.measured and not last:
                self._replan(f"re-plan after epoch {self.epoch}")

    def _group_sizes(self) -> dict[str, int]:
        """Training images per geometry, named "HxW (classes)"."""
        named = {}
        for geometry, indices in self.train_items.geometry_groups().items():
            classes = sorted({self.train_items.samples[i].class_name for i in indices})
            named[f"{geometry} ({', '.join(classes)})"] = len(indices)
        return named or {"": 0}

    def _epoch_batches(self, epoch: int) -> list[torch.Tensor]:
        """This epoch's global batches of training indices, one geometry each (``ssmad.engine.rng.epoch_batches``)."""
        groups = list(self.train_items.geometry_groups().values())
        return epoch_batches(self.config.seed, epoch, groups, self.batch_size)

    def calibrate(self, source: FeatureSource) -> Calibration:
        """Thresholds and heatmap scales from the validation normals (every process computes them):
        the scores and maps of the last validation pass when it saw the final weights (else a new
        pass over their cached features), or with tiles their whole images scored tile by tile as
        prediction does."""
        if self.tile is None:
            if self.last_validation is None or self.last_validation[0] != self.global_step:
                with torch.random.fork_rng(devices=[]):
                    self.last_validation = (self.global_step, validate_normals(self.model, source, self.device, self.batch_size))
            scored = self.last_validation[1].scored
            calibration = calibrate(source.class_names, scored.scores, scored.maps, self.config.target_fpr, self.pixel_rule,
                                    embeddings=scored.embeddings)
        else:
            calibration = calibrate_tiled(
                self.model, self.val_set, self.device, self.batch_size, self.config.target_fpr, self.tile, self.pixel_rule
            )
        self.log.info("calibration: %s; class prototypes for unlabelled images: %s", describe_image_score(self.model.config.image_score),
                      ", ".join(f"{name} ({p.num_normals} normals)" for name, p in calibration.prototypes.items()) or "none")
        for name, cal in calibration.classes.items():
            supported = calibration_fpr_interval(cal.num_images, calibration.target_fpr, cal.threshold_rule)
            self.log.info("calibration %s: threshold %.5f (target FPR %g, %d images, rule %s), pixel threshold %.5f "
                          "(rule %s); the realised FPR these normals support: %.3g-%.3g (95 %%), expected %.3g, "
                          "none below 1/(n+1) = %.3g",
                          name, cal.threshold, calibration.target_fpr, cal.num_images, cal.threshold_rule,
                          cal.pixel_threshold.value, cal.pixel_threshold.rule, supported.low, supported.high,
                          supported.expected, supported.smallest)
        warning = too_few_normals_warning(calibration)
        if warning:
            self.log.warning("calibration: %s", warning)
        return calibration


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train a model as ``config`` says (or continue the run in ``config.out`` with ``resume``)."""
    return Trainer(config, resume=resume).fit()


def resume_config(run_dir: str | Path, **changes: Any) -> TrainConfig:
    """The :class:`TrainConfig` stored in a run's checkpoint, with ``changes`` (e.g. device)."""
    payload = load_checkpoint(run_dir)
    data = {**payload["train_config"], **changes, "out": str(run_dir)}
    return TrainConfig.from_dict(data)

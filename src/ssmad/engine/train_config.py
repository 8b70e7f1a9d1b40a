"""``TrainConfig``: every setting of a training run, with the defaults the command line shows."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ssmad.data.dataset import DEFAULT_VAL_FRACTION
from ssmad.data.geometry import DEFAULT_SIZE_RULE
from ssmad.data.layouts import AUTO_KIND
from ssmad.engine.amp import NO_AMP
from ssmad.engine.device import AUTO_DEVICE
from ssmad.engine.pixel_thresholds import DEFAULT_NUM_STD, DEFAULT_PIXEL_FPR, DEFAULT_PIXEL_RULE, PixelRule
from ssmad.engine.rng import DEFAULT_SEED
from ssmad.engine.thresholds import DEFAULT_TARGET_FPR
from ssmad.models.presets import DEFAULT_PRESET


@dataclass
class TrainConfig:
    """Everything a training run needs; ``None`` means "the preset's value"."""

    data: str | list[str]  # one dataset root, or several whose classes train one model
    out: str
    preset: str = DEFAULT_PRESET
    dataset: str = AUTO_KIND
    classes: list[str] | None = None
    image_size: str = DEFAULT_SIZE_RULE  # --image-size: N, HxW or long:N (ssmad.data.geometry)
    roi: list[str] = field(default_factory=list)  # --roi texts "[CLASS=]L,T,R,B" (ssmad.data.roi)
    tile: int | None = None  # --tile: images larger than this are scored and trained on in tiles
    tile_overlap: int = 0
    tile_crops: str = "grid"  # --tile-crops: train on every grid tile (cached) or random crops (ssmad.engine.tile_dataset)
    encoder: str | None = None
    weights: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    grad_clip: float | None = None
    amp: str = NO_AMP
    device: str = AUTO_DEVICE
    seed: int = DEFAULT_SEED
    deterministic: bool = False
    cache: str = "memory"
    cache_dir: str | None = None  # --cache disk: where features are kept (default RUN/feature_cache)
    accumulate: int = 1
    checkpoint_every: int = 10
    val_fraction: float = DEFAULT_VAL_FRACTION
    target_fpr: float = DEFAULT_TARGET_FPR
    pixel_rule: str = DEFAULT_PIXEL_RULE  # --pixel-rule (ssmad.engine.pixel_thresholds)
    pixel_num_std: float = DEFAULT_NUM_STD
    pixel_fpr: float = DEFAULT_PIXEL_FPR
    num_workers: int = 0
    max_steps: int | None = None
    time_budget: float | None = None  # --time-budget, in seconds (ssmad.engine.time_budget)
    val_data: str | None = None  # --val-data: a labelled validation root (ssmad.engine.validation)
    log: str | None = None  # --log tensorboard (ssmad.engine.tensorboard_log)
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "image_size" in values:  # runs before 0.2.0 stored the square side as an int
            values["image_size"] = str(values["image_size"])
        return cls(**values)

    @property
    def pixel(self) -> PixelRule:
        """The pixel threshold rule calibration uses."""
        return PixelRule(self.pixel_rule, self.pixel_num_std, self.pixel_fpr)

    @property
    def roots(self) -> list[str]:
        """The dataset roots: ``data`` as a list."""
        return [self.data] if isinstance(self.data, str) else list(self.data)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each field's default (fields without one are left out): what the command line offers."""
        return {
            f.name: f.default if f.default is not MISSING else f.default_factory()
            for f in fields(cls)
            if f.default is not MISSING or f.default_factory is not MISSING
        }

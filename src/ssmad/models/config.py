"""ModelConfig: every hyper-parameter of the MambaAD / Pyramid-Mamba models, once, with the
papers' defaults (the named presets are in ``ssmad.models.presets``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ssmad.models.image_score import DEFAULT_IMAGE_SCORE, parse_image_score
from ssmad.modules.decoder import DROP_PATH_RULES
from ssmad.ops.routes import PYRAMID_MERGES
from ssmad.ops.scan_orders import SCAN_ORDERS

NUM_DIRECTIONS = (2, 4, 8)
LOSSES = ("mse", "cosine")
MAP_SCALES = ("sum", "official")
TUPLE_FIELDS = ("decoder_depths", "lec_kernel_sizes")  # lists (from JSON) become tuples


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of an :class:`~ssmad.models.AnomalyModel` (defaults: Pyramid-Mamba).

    Encoder and bottleneck:
        encoder: resnet18 | resnet34 | resnet50 | wide_resnet50_2 | mobilenet_v2.
        encoder_weights: weights file | directory | "imagenet" | "random" (see build_encoder).
        noise_std: Gaussian feature noise on the bottleneck output in training (0 = none).
    Training loss, summed over the three scales (see ``AnomalyModel.loss``):
        loss: "mse" (Pyramid-Mamba's paper) or "cosine" (1 - cosine similarity of each sample's
            flattened feature maps, as RD4AD and MambaAD's official configuration); cosine does
            not depend on the features' scale.
    Decoder (stage widths come from the encoder: [2*C3, C3, C2, C1]):
        decoder_depths: HSS blocks per stage; modules of 3 when depth % 3 == 0, else of 2.
        drop_path_rate: drop-path rate of the first decoder block, falling linearly to 0.
        drop_path_rule: "per_block" (each block its own rate on that line) or "official" (all the
            blocks of a stage's j-th module take the stage's j-th rate, as the official code does).
            Training only: eval-mode outputs do not depend on it.
        lec_kernel_sizes: depthwise kernels of the LEC local branch.
    SS2D:
        scan_order: sweep | scan | zorder | zigzag | hilbert.
        num_directions: K in {2, 4, 8}.
        pyramid_levels: P (0 = plain SS2D); level p scans 2^p x 2^p sub-regions.
        pyramid_merge: "mean" (equal weights, official code) or "nested" (the paper's recursion).
        d_state, ssm_ratio, dt_rank (None = ceil(C/16)), d_conv, dt_min, dt_max, dt_init_floor.
    Anomaly map:
        blur_sigma: sigma of the Gaussian blur of the map (0 = none).
        map_scale: "sum" (the sum over scales of 1 - cosine similarity, docs/design.md "Method") or
            "official" (the reference framework's: that sum divided by number of scales x sum of
            the scale weights = 3 x 3 = 9, as ADer's ``cal_anomaly_map``), so maps, scores and
            thresholds compare with the official code's. Rankings (every metric) do not change.
        image_score: the image score of a map (``ssmad.models.image_score``): "top_mean:0.01", the
            mean of its highest 1 % (default; measured better than the maximum), or "max", the
            papers' and the official code's.
    """

    encoder: str = "resnet34"
    encoder_weights: str = "imagenet"
    noise_std: float = 0.05
    loss: str = "mse"
    decoder_depths: tuple[int, ...] = (3, 4, 6, 3)
    drop_path_rate: float = 0.2
    drop_path_rule: str = "per_block"
    lec_kernel_sizes: tuple[int, ...] = (5, 7)
    scan_order: str = "sweep"
    num_directions: int = 4
    pyramid_levels: int = 2
    pyramid_merge: str = "mean"
    d_state: int = 16
    ssm_ratio: float = 2.0
    dt_rank: int | None = None
    d_conv: int = 3
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    blur_sigma: float = 4.0
    map_scale: str = "sum"
    image_score: str = DEFAULT_IMAGE_SCORE

    def __post_init__(self) -> None:
        for name in TUPLE_FIELDS:
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field, its value and what is allowed."""
        checks = [
            ("scan_order", self.scan_order in SCAN_ORDERS, f"one of {', '.join(SCAN_ORDERS)}"),
            ("num_directions", self.num_directions in NUM_DIRECTIONS, "2, 4 or 8"),
            ("pyramid_levels", self.pyramid_levels >= 0, "an integer >= 0"),
            ("pyramid_merge", self.pyramid_merge in PYRAMID_MERGES, f"one of {', '.join(PYRAMID_MERGES)}"),
            ("noise_std", self.noise_std >= 0, ">= 0"),
            ("loss", self.loss in LOSSES, f"one of {', '.join(LOSSES)}"),
            (
                "decoder_depths",
                len(self.decoder_depths) == 4 and min(self.decoder_depths) >= 1,
                "4 stage depths >= 1",
            ),
            ("drop_path_rate", 0 <= self.drop_path_rate < 1, "in [0, 1)"),
            ("drop_path_rule", self.drop_path_rule in DROP_PATH_RULES, f"one of {', '.join(DROP_PATH_RULES)}"),
            ("lec_kernel_sizes", all(k % 2 == 1 for k in self.lec_kernel_sizes), "odd kernel sizes"),
            ("d_state", self.d_state >= 1, ">= 1"),
            ("ssm_ratio", self.ssm_ratio > 0, "> 0"),
            ("dt_rank", self.dt_rank is None or self.dt_rank >= 1, "None (= ceil(C/16)) or >= 1"),
            ("d_conv", self.d_conv % 2 == 1, "an odd kernel size"),
            ("dt_min", 0 < self.dt_min <= self.dt_max, "0 < dt_min <= dt_max"),
            ("blur_sigma", self.blur_sigma >= 0, ">= 0"),
            ("map_scale", self.map_scale in MAP_SCALES, f"one of {', '.join(MAP_SCALES)}"),
            ("image_score", _valid_image_score(self.image_score), "'max' or 'top_mean:F' with 0 < F <= 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"ModelConfig.{name} = {getattr(self, name)!r} is invalid: must be {allowed}")

    @classmethod
    def field_names(cls) -> list[str]:
        """The configurable fields, in definition order."""
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-safe: tuples become lists), e.g. for checkpoints."""
        return {name: _plain(getattr(self, name)) for name in self.field_names()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError listing the valid fields."""
        check_field_names(values)
        return cls(**values)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with ``overrides`` applied (validated; unknown names raise ValueError)."""
        check_field_names(overrides)
        return dataclasses.replace(self, **overrides)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_field_names(values: dict[str, Any]) -> None:
    """Raise ValueError for keys that are not ModelConfig fields, listing the valid ones."""
    valid = ModelConfig.field_names()
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) {', '.join(unknown)}; valid fields: {', '.join(valid)}")


def _valid_image_score(rule: str) -> bool:
    try:
        parse_image_score(rule)
    except ValueError:
        return False
    return True

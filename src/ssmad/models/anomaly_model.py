"""AnomalyModel: frozen encoder -> bottleneck (MFF + OCE) -> state-space decoder, and the
factory ``build_model`` for the presets ``mambaad`` and ``pyramid_mamba``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmad.models.anomaly_map import anomaly_maps_and_scores
from ssmad.data.geometry import SIDE_MULTIPLE
from ssmad.models.config import ModelConfig
from ssmad.models.presets import get_preset
from ssmad.modules.bottleneck import Bottleneck
from ssmad.modules.decoder import MambaDecoder
from ssmad.modules.encoder import build_encoder
from ssmad.modules.encoder_base import FeatureEncoder


class AnomalyModel(nn.Module):
    """Reconstruction of frozen multi-scale features by a state-space decoder.

    images (B, 3, H, W), normalised with ``encoder.mean``/``encoder.std``, H and W multiples of 32
    -> encoder features [f1 (B, C1, H/4, W/4), f2 (B, C2, H/8, W/8), f3 (B, C3, H/16, W/16)]
    -> bottleneck z (B, 2*C3, H/32, W/32) (+ noise in training) -> decoder [g1, g2, g3].
    Only the bottleneck and decoder train; the encoder stays frozen in eval mode.
    """

    def __init__(self, config: ModelConfig, encoder: FeatureEncoder) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.bottleneck = Bottleneck(encoder.feature_info, noise_std=config.noise_std)
        c1, c2, c3 = (info.channels for info in encoder.feature_info)
        self.decoder = MambaDecoder(
            dims=(2 * c3, c3, c2, c1),
            depths=config.decoder_depths,
            drop_path_rate=config.drop_path_rate,
            drop_path_rule=config.drop_path_rule,
            lec_kernel_sizes=config.lec_kernel_sizes,
            scan_order=config.scan_order,
            num_directions=config.num_directions,
            pyramid_levels=config.pyramid_levels,
            pyramid_merge=config.pyramid_merge,
            d_state=config.d_state,
            ssm_ratio=config.ssm_ratio,
            dt_rank=config.dt_rank,
            d_conv=config.d_conv,
            dt_min=config.dt_min,
            dt_max=config.dt_max,
            dt_init_floor=config.dt_init_floor,
        )

    @staticmethod
    def check_images(images: torch.Tensor) -> None:
        """Raise ValueError unless images is (B, 3, H, W) with H, W multiples of 32."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got shape {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % SIDE_MULTIPLE or width % SIDE_MULTIPLE:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of {SIDE_MULTIPLE}; "
                f"resize the images (e.g. to 224, 256, 320 or 384)"
            )

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Frozen encoder features [f1, f2, f3], no gradient."""
        self.check_images(images)
        return self.encoder(images)

    def decode(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Bottleneck (+ feature noise in training) and decoder: [f1, f2, f3] -> [g1, g2, g3]."""
        return self.decoder(self.bottleneck(features))

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """images (B, 3, H, W) -> (encoder features, decoder features), three scales each."""
        enc = self.encode(images)
        return enc, self.decode(enc)

    def loss(self, enc_features: list[torch.Tensor], dec_features: list[torch.Tensor]) -> torch.Tensor:
        """Training loss, a scalar: sum over scales of ``config.loss`` between f_i and g_i (B, C, h, w).

        "mse": mean squared error; "cosine": mean over the batch of 1 - cosine similarity of
        each sample's flattened maps (B, C*h*w).
        """
        return sum(reconstruction_loss(f.float(), g.float(), self.config.loss) for f, g in zip(enc_features, dec_features))

    def anomaly_map_from_features(
        self,
        enc_features: list[torch.Tensor],
        dec_features: list[torch.Tensor],
        size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (B, H, W) at ``size``: sum over scales of upsampled 1 - cosine similarity (scaled
        as ``config.map_scale`` says), Gaussian blur of sigma ``config.blur_sigma``; scores (B,)
        by ``config.image_score`` (``ssmad.models.image_score``)."""
        return anomaly_maps_and_scores(
            enc_features, dec_features, tuple(size), self.config.blur_sigma, self.config.map_scale,
            self.config.image_score,
        )

    @torch.no_grad()
    def anomaly_map(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (B, H, W) at the input size and image scores (B,), without gradients.

        Call ``model.eval()`` first: in training mode the bottleneck adds feature noise and
        drop-path is active.
        """
        enc, dec = self(images)
        return self.anomaly_map_from_features(enc, dec, tuple(images.shape[-2:]))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State of the bottleneck and decoder (keys "bottleneck.*", "decoder.*")."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def load_trainable_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load a :meth:`trainable_state_dict`; raise ValueError naming missing, unexpected or
        mis-shaped keys (e.g. a checkpoint of another preset or encoder)."""
        expected = self.trainable_state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        mis_shaped = [
            f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
        ]
        problems = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
            if keys:
                problems.append(f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})")
        if problems:
            raise ValueError(
                "trainable state does not fit this model: " + "; ".join(problems)
                + ". Build the model with the configuration the checkpoint was trained with."
            )
        self.load_state_dict(dict(state_dict), strict=False)

    def parameter_counts(self) -> dict[str, int]:
        """Number of parameters of the encoder, bottleneck and decoder."""
        return {
            name: sum(p.numel() for p in getattr(self, name).parameters())
            for name in ("encoder", "bottleneck", "decoder")
        }


def reconstruction_loss(target: torch.Tensor, output: torch.Tensor, kind: str) -> torch.Tensor:
    """"mse" or "cosine" (see :meth:`AnomalyModel.loss`) of one scale, (B, ...) -> a scalar."""
    if kind == "cosine":
        return (1 - F.cosine_similarity(output.flatten(1), target.flatten(1), dim=1)).mean()
    return F.mse_loss(output, target)


def build_model(name_or_config: str | ModelConfig | Mapping[str, Any] = "pyramid_mamba", **overrides: Any) -> AnomalyModel:
    """Build an :class:`AnomalyModel` from a preset name ("mambaad", "pyramid_mamba"), a
    :class:`ModelConfig` or a dict of its fields, with ``overrides`` of any config field,
    e.g. ``build_model("mambaad", encoder="resnet18", encoder_weights="random")``.

    Raises ValueError for an unknown preset or field, or an invalid value.
    """
    if isinstance(name_or_config, ModelConfig):
        config = name_or_config
    elif isinstance(name_or_config, Mapping):
        config = ModelConfig.from_dict(dict(name_or_config))
    else:
        config = get_preset(name_or_config).model
    config = config.replace(**overrides)
    encoder = build_encoder(config.encoder, config.encoder_weights)
    return AnomalyModel(config, encoder)

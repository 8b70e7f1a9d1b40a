"""The frozen feature encoder's common behaviour and its self-description (`FeatureInfo`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def init_conv_bn(module: nn.Module) -> None:
    """torchvision's initialisation: Kaiming-normal (fan_out) convs, BN weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class FeatureInfo:
    """One returned feature map: `channels` C and `stride` s, i.e. a (B, C, H/s, W/s) tensor."""

    channels: int
    stride: int


class FeatureEncoder(nn.Module, ABC):
    """A frozen CNN returning three feature maps at strides 4, 8 and 16.

    Subclasses build the layers with torchvision's parameter names, set `feature_info` and
    implement `_features`. `name` is the architecture (e.g. "resnet34").
    The encoder never trains: its parameters do not require gradients, `train()` leaves it in
    eval mode (batch-norm keeps its running statistics) and `forward` runs under `no_grad`.

    Attributes set by the factory (`build_encoder`) after the weights are loaded:
    `mean`, `std` (the RGB normalisation these weights expect), `weights_source` (a file path,
    or "random") and `weights_sha256` (hex digest of the weights file, None for random init).
    """

    feature_info: list[FeatureInfo]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.mean: tuple[float, float, float] = IMAGENET_MEAN
        self.std: tuple[float, float, float] = IMAGENET_STD
        self.weights_source: str = "random"
        self.weights_sha256: str | None = None

    def freeze(self) -> FeatureEncoder:
        """Stop gradients and switch to eval mode for good; returns self."""
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> FeatureEncoder:
        """Ignore `mode`: the encoder stays in eval mode (frozen batch-norm statistics)."""
        return super().train(False)

    @abstractmethod
    def _features(self, images: Tensor) -> list[Tensor]:
        """images (B, 3, H, W) -> the three feature maps described by `feature_info`."""

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[Tensor]:
        """images (B, 3, H, W), normalised with `mean`/`std` -> [(B, C_i, H/s_i, W/s_i)] x 3."""
        return self._features(images)

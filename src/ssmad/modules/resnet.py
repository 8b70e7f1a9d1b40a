"""ResNet encoders (conv1..layer3) with torchvision's parameter names.

Only the stem and layer1-3 are built (outputs at strides 4, 8, 16); layer4 and fc are not,
so torchvision's full `.pth` files load with those keys ignored. ResNet-50 follows
torchvision's "v1.5" design (stride on the 3x3 convolution of a Bottleneck block).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ssmad.modules.encoder_base import FeatureEncoder, FeatureInfo, init_conv_bn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def downsample_branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Shortcut projection conv1x1 + BN (torchvision keys `downsample.0`, `downsample.1`)."""
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut: (B, C_in, H, W) -> (B, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, width_per_group: int = 64
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            downsample_branch(in_channels, planes, stride)
            if stride != 1 or in_channels != planes
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class BottleneckBlock(nn.Module):
    """ResNet Bottleneck block (1x1, 3x3 with the stride, 1x1 expanding 4x) and a shortcut.

    (B, C_in, H, W) -> (B, 4*planes, H/stride, W/stride); inner width planes * width_per_group/64
    (128 for Wide ResNet-50-2).
    """

    expansion = 4

    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, width_per_group: int = 64
    ) -> None:
        super().__init__()
        width = planes * width_per_group // 64
        out_channels = planes * self.expansion
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            downsample_branch(in_channels, out_channels, stride)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


@dataclass(frozen=True)
class ResNetSpec:
    """Block type, blocks per stage (layer1-3) and inner width of one ResNet variant."""

    block: type[BasicBlock] | type[BottleneckBlock]
    layers: tuple[int, int, int]
    width_per_group: int = 64


RESNET_SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec(BasicBlock, (2, 2, 2)),
    "resnet34": ResNetSpec(BasicBlock, (3, 4, 6)),
    "resnet50": ResNetSpec(BottleneckBlock, (3, 4, 6)),
    "wide_resnet50_2": ResNetSpec(BottleneckBlock, (3, 4, 6), width_per_group=128),
}


def make_stage(
    block: type[BasicBlock] | type[BottleneckBlock],
    in_channels: int,
    planes: int,
    num_blocks: int,
    stride: int,
    width_per_group: int = 64,
) -> nn.Sequential:
    """`num_blocks` blocks, the first with `stride`.

    (B, C_in, H, W) -> (B, planes * block.expansion, H/stride, W/stride).
    """
    out_channels = planes * block.expansion
    blocks = [block(in_channels, planes, stride, width_per_group)]
    blocks += [block(out_channels, planes, 1, width_per_group) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class ResNetEncoder(FeatureEncoder):
    """ResNet stem + layer1-3: images (B, 3, H, W) -> layer1 (H/4), layer2 (H/8), layer3 (H/16).

    Channels 64/128/256 (resnet18/34) or 256/512/1024 (resnet50, wide_resnet50_2).
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        spec = RESNET_SPECS[name]
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        exp = spec.block.expansion
        wpg = spec.width_per_group
        self.layer1 = make_stage(spec.block, 64, 64, spec.layers[0], 1, wpg)
        self.layer2 = make_stage(spec.block, 64 * exp, 128, spec.layers[1], 2, wpg)
        self.layer3 = make_stage(spec.block, 128 * exp, 256, spec.layers[2], 2, wpg)
        self.feature_info = [
            FeatureInfo(64 * exp, 4),
            FeatureInfo(128 * exp, 8),
            FeatureInfo(256 * exp, 16),
        ]
        init_conv_bn(self)

    def _features(self, images: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f1, f2, f3]

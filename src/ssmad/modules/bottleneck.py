"""The bottleneck between encoder and decoder: MFF (multi-scale feature fusion) + OCE
(one-class embedding), sized from the encoder's `feature_info`.

With encoder channels C1, C2, C3 at strides 4, 8, 16 (64/128/256 for ResNet18/34):
    a = ReLU(BN(conv3x3 s2 (f1)))                       C1 -> C2, H/4 -> H/8
    a = a + ReLU(BN(conv1x1 (f2)))                      C2 -> C2
    b = ReLU(BN(conv3x3 s2 (a)))                        C2 -> C3, H/8 -> H/16
    b = b + ReLU(BN(conv1x1 (f3)))                      C3 -> C3
    b = ReLU(BN(conv1x1 (b)))                           C3 -> C3
    z = 3 ResNet Bottleneck blocks (planes C3/2, expansion 4, first with stride 2)
                                                        C3 -> 2*C3, H/16 -> H/32
as in MambaAD's official MFF_OCE (the 1x1 convolutions carry a bias there, the 3x3 do not);
parameter names follow that code (conv1/bn1, conv21/bn21, conv2/bn2, conv31/bn31, convf/bnf,
bn_layer). 1.46 M parameters for ResNet34 features. In training mode Gaussian noise
N(0, noise_std^2) is added to z (Pyramid-Mamba's feature-level synthetic anomalies).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ssmad.modules.encoder_base import FeatureInfo, init_conv_bn
from ssmad.modules.resnet import BottleneckBlock, conv3x3, make_stage

OCE_BLOCKS = 3


class Bottleneck(nn.Module):
    """MFF + OCE: [(B, C1, H/4, W/4), (B, C2, H/8, W/8), (B, C3, H/16, W/16)]
    -> (B, 2*C3, H/32, W/32).

    feature_info: the encoder's three `FeatureInfo`s (strides 4, 8, 16 or any doubling sequence).
    noise_std: std of the Gaussian noise added to the output in training mode (0 disables).
    """

    def __init__(self, feature_info: Sequence[FeatureInfo], noise_std: float = 0.05) -> None:
        super().__init__()
        if len(feature_info) != 3:
            raise ValueError(f"Bottleneck needs 3 feature maps, got {len(feature_info)}")
        strides = [info.stride for info in feature_info]
        if strides[1] != 2 * strides[0] or strides[2] != 2 * strides[1]:
            raise ValueError(f"Bottleneck needs strides doubling from map to map, got {strides}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        c1, c2, c3 = (info.channels for info in feature_info)
        self.noise_std = float(noise_std)
        self.out_channels = 2 * c3
        self.out_stride = 2 * strides[2]
        self.conv1 = conv3x3(c1, c2, stride=2)
        self.bn1 = nn.BatchNorm2d(c2)
        self.conv21 = nn.Conv2d(c2, c2, 1)
        self.bn21 = nn.BatchNorm2d(c2)
        self.conv2 = conv3x3(c2, c3, stride=2)
        self.bn2 = nn.BatchNorm2d(c3)
        self.conv31 = nn.Conv2d(c3, c3, 1)
        self.bn31 = nn.BatchNorm2d(c3)
        self.convf = nn.Conv2d(c3, c3, 1)
        self.bnf = nn.BatchNorm2d(c3)
        self.relu = nn.ReLU(inplace=True)
        self.bn_layer = make_stage(BottleneckBlock, c3, c3 // 2, OCE_BLOCKS, stride=2)
        init_conv_bn(self)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """features [f1, f2, f3] as the encoder returns them -> z (B, 2*C3, H/32, W/32)."""
        f1, f2, f3 = features
        fused = self.relu(self.bn1(self.conv1(f1))) + self.relu(self.bn21(self.conv21(f2)))
        fused = self.relu(self.bn2(self.conv2(fused))) + self.relu(self.bn31(self.conv31(f3)))
        fused = self.relu(self.bnf(self.convf(fused)))
        z = self.bn_layer(fused)
        if self.training and self.noise_std > 0:
            z = z + torch.randn_like(z) * self.noise_std
        return z

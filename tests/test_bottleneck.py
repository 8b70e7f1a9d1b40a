"""The MFF + OCE bottleneck: size from feature_info, official layout and count, shapes, noise."""

import pytest
import torch
from torch import nn

from ssmad.modules.bottleneck import Bottleneck
from ssmad.modules.encoder import FeatureInfo

RESNET34_INFO = [FeatureInfo(64, 4), FeatureInfo(128, 8), FeatureInfo(256, 16)]
RESNET50_INFO = [FeatureInfo(256, 4), FeatureInfo(512, 8), FeatureInfo(1024, 16)]


def _expected_parameters(c1: int, c2: int, c3: int) -> int:
    """Hand count of MambaAD's MFF_OCE: 3x3 convs without bias, 1x1 MFF convs with bias,
    BN = 2 per channel; OCE = 3 Bottleneck blocks (planes p = c3/2, out 4p = 2*c3)."""
    bn = 2
    mff = (
        c1 * c2 * 9 + bn * c2  # conv1 + bn1
        + c2 * c2 + c2 + bn * c2  # conv21 + bn21
        + c2 * c3 * 9 + bn * c3  # conv2 + bn2
        + 2 * (c3 * c3 + c3 + bn * c3)  # conv31 + bn31, convf + bnf
    )
    p, out = c3 // 2, 2 * c3
    inner = p * p * 9 + out * p + bn * (2 * p + out)  # 3x3, 1x1 expand, 3 BNs
    oce = (c3 * p + inner + c3 * out + bn * out) + 2 * (out * p + inner)
    return mff + oce


def test_parameter_count_resnet34_is_the_official_1_46_m() -> None:
    bottleneck = Bottleneck(RESNET34_INFO)
    count = sum(p.numel() for p in bottleneck.parameters())
    assert count == _expected_parameters(64, 128, 256) == 1_458_304


def test_sizes_itself_from_a_wider_encoder() -> None:
    bottleneck = Bottleneck(RESNET50_INFO)
    assert sum(p.numel() for p in bottleneck.parameters()) == _expected_parameters(256, 512, 1024)
    assert bottleneck.out_channels == 2048 and bottleneck.out_stride == 32
    assert bottleneck.bn_layer[0].conv1.weight.shape == (512, 1024, 1, 1)


def test_parameter_names_follow_the_official_mff_oce() -> None:
    keys = set(Bottleneck(RESNET34_INFO).state_dict())
    expected_sample = {
        "conv1.weight", "bn1.running_mean", "conv21.weight", "conv21.bias", "bn21.weight",
        "conv2.weight", "bn2.bias", "conv31.weight", "conv31.bias", "bn31.running_var",
        "convf.weight", "convf.bias", "bnf.weight",
        "bn_layer.0.conv1.weight", "bn_layer.0.conv3.weight", "bn_layer.0.bn3.weight",
        "bn_layer.0.downsample.0.weight", "bn_layer.0.downsample.1.running_mean",
        "bn_layer.2.conv2.weight",
    }
    assert expected_sample <= keys
    assert "conv1.bias" not in keys and "conv2.bias" not in keys
    assert "bn_layer.1.downsample.0.weight" not in keys


def _reference_forward(
    b: Bottleneck, f1: torch.Tensor, f2: torch.Tensor, f3: torch.Tensor
) -> torch.Tensor:
    """The layer order of DESIGN.md §2, written out with functional ops (eval mode)."""

    def cbr(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(bn(conv(x)))

    x = cbr(b.conv1, b.bn1, f1) + cbr(b.conv21, b.bn21, f2)
    x = cbr(b.conv2, b.bn2, x) + cbr(b.conv31, b.bn31, f3)
    x = cbr(b.convf, b.bnf, x)
    for block in b.bn_layer:
        identity = x if block.downsample is None else block.downsample(x)
        y = cbr(block.conv1, block.bn1, x)
        y = cbr(block.conv2, block.bn2, y)
        x = torch.relu(block.bn3(block.conv3(y)) + identity)
    return x


@pytest.mark.parametrize("size", [224, 256, 320])
def test_output_shape_and_layer_order(size: int) -> None:
    torch.manual_seed(0)
    bottleneck = Bottleneck(RESNET34_INFO).eval()
    features = [
        torch.randn(2, i.channels, size // i.stride, size // i.stride) for i in RESNET34_INFO
    ]
    z = bottleneck(features)
    assert z.shape == (2, 512, size // 32, size // 32)
    torch.testing.assert_close(z, _reference_forward(bottleneck, *features))


def test_rejects_feature_info_it_cannot_fuse() -> None:
    with pytest.raises(ValueError, match="3 feature maps"):
        Bottleneck(RESNET34_INFO[:2])
    with pytest.raises(ValueError, match="doubling"):
        Bottleneck([FeatureInfo(64, 4), FeatureInfo(128, 16), FeatureInfo(256, 32)])
    with pytest.raises(ValueError, match="noise_std"):
        Bottleneck(RESNET34_INFO, noise_std=-0.1)


def test_feature_noise_only_in_training_mode() -> None:
    torch.manual_seed(0)
    features = [torch.randn(4, i.channels, 64 // i.stride, 64 // i.stride) for i in RESNET34_INFO]
    bottleneck = Bottleneck(RESNET34_INFO, noise_std=0.05)
    bottleneck.train()
    difference = bottleneck(features) - bottleneck(features)  # BN uses the same batch statistics
    # two independent N(0, 0.05^2) draws differ by N(0, 2 * 0.05^2)
    assert difference.std().item() == pytest.approx(0.05 * 2**0.5, rel=0.05)
    assert difference.mean().abs().item() < 0.005
    bottleneck.eval()
    torch.testing.assert_close(bottleneck(features), bottleneck(features), rtol=0, atol=0)

    silent = Bottleneck(RESNET34_INFO, noise_std=0.0).train()
    torch.testing.assert_close(silent(features), silent(features), rtol=0, atol=0)

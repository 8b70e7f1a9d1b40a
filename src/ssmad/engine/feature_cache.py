"""Frozen-encoder features computed once and reused every epoch.

Training inputs are not augmented and the encoder is frozen, so its features of an image never
change: computing them once turns every later epoch into bottleneck + decoder work only.
Features live in memory (tensors) or on disk (``.npy`` memory maps, for datasets larger than
RAM). ``LiveFeatures`` is the uncached path (the encoder runs on every batch), kept for
comparison and for very large datasets.

A disk cache is reused by ``--resume`` and by any later run pointed at the same folder
(``--cache-dir``) when its manifest (``cache.json``, written last) matches: the sha256 of the
encoder's weights (of the tensors themselves, so a random encoder counts too) and of the weights
file, the normalisation, the input size, the regions of interest and the file list with each file's size and
modification time. Anything else is rebuilt, saying why: no manifest (a build that was
interrupted), another encoder, another input size or region of interest, a file gone, added or changed, or a feature
file that is truncated or unreadable.

Classes of different geometries (``ssmad.data.geometry``) give features of different shapes: they
are cached per geometry (on disk in a sub-folder ``HxW`` each) behind one :class:`GeometryFeatures`,
and a batch takes its indices from one geometry (``AnomalyDataset.geometry_batches``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ssmad.data.roi import rois_to_lists
from ssmad.engine.atomic_write import atomic_write_text
from ssmad.engine.training_files import file_stamp

CACHE_CHOICES = ("memory", "disk", "none")
MANIFEST = "cache.json"


class FeatureSource(Protocol):
    """Encoder features by dataset index."""

    class_names: list[str]
    origin: str  # how the features came to be: "computed", "reused ...", "rebuilt: ...", "not cached"

    def __len__(self) -> int: ...

    def index_batches(self, batch_size: int) -> list[torch.Tensor]:
        """Every index once, in batches of at most ``batch_size`` that share one geometry."""

    def batch(self, indices: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        """Indices (B,) of one geometry -> encoder features [(B, C_s, H_s, W_s) for each scale s] on ``device``."""
        ...


class FeatureCache:
    """Stored features: ``features[s]`` is (N, C_s, H_s, W_s), a tensor or a disk memory map."""

    def __init__(self, features: list[torch.Tensor | np.ndarray], class_names: list[str], origin: str = "computed"):
        self.features = features
        self.class_names = class_names
        self.origin = origin

    def __len__(self) -> int:
        return len(self.class_names)

    def index_batches(self, batch_size: int) -> list[torch.Tensor]:
        """Every index in order, cut into batches (one geometry: any batch works)."""
        return list(torch.arange(len(self)).split(batch_size))

    def batch(self, indices: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        index = indices.cpu().numpy()
        return [torch.as_tensor(np.asarray(f[index])).to(device) for f in self.features]


class GeometryFeatures:
    """Cached features of a dataset whose classes have several geometries: one cache per geometry,
    addressed by the dataset's own indices."""

    def __init__(self, parts: list[tuple[list[int], FeatureCache]], class_names: list[str]):
        self.parts = parts
        self.class_names = class_names
        self.place = {index: (part, local) for part, (indices, _) in enumerate(parts) for local, index in enumerate(indices)}
        self.origin = "; ".join(f"{cache.origin}" for _, cache in parts)

    def __len__(self) -> int:
        return len(self.class_names)

    def index_batches(self, batch_size: int) -> list[torch.Tensor]:
        """Every index, cut into batches of one geometry each."""
        return [part for indices, _ in self.parts for part in torch.tensor(indices).split(batch_size)]

    def batch(self, indices: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        """Features of ``indices``, which must share one geometry."""
        places = [self.place[int(i)] for i in indices]
        part = places[0][0]
        if any(p != part for p, _ in places):
            raise ValueError("a batch of features must come from one geometry: use AnomalyDataset.geometry_batches")
        return self.parts[part][1].batch(torch.tensor([local for _, local in places]), device)


class LiveFeatures:
    """No cache: loads the images and runs the encoder for every batch."""

    def __init__(self, model: torch.nn.Module, dataset: Dataset, class_names: list[str]):
        self.model = model
        self.dataset = dataset
        self.class_names = class_names
        self.origin = "not cached"

    def __len__(self) -> int:
        return len(self.class_names)

    def index_batches(self, batch_size: int) -> list[torch.Tensor]:
        """Every index, cut into batches of one geometry each."""
        return [torch.tensor(batch) for batch in self.dataset.geometry_batches(batch_size)]

    def batch(self, indices: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        images = torch.stack([self.dataset[int(i)]["image"] for i in indices]).to(device)
        return self.model.encode(images)


def dataset_class_names(dataset: Dataset) -> list[str]:
    """The class of every item of an :class:`ssmad.data.AnomalyDataset`, in index order."""
    return [sample.class_name for sample in dataset.samples]


def cache_key(model: torch.nn.Module, dataset: Dataset) -> dict[str, Any]:
    """What a disk cache's features depend on (see the module docstring), as plain JSON values."""
    encoder = model.encoder
    digest = hashlib.sha256()
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {
        "encoder_state_sha256": digest.hexdigest(),
        "encoder_weights_sha256": encoder.weights_sha256,
        "normalization": [list(encoder.mean), list(encoder.std)],
        "geometries": {name: list(geometry.hw) for name, geometry in dataset.geometries.items()},
        "tile": None if getattr(dataset, "tile", None) is None else dataset.tile.to_dict(),
        "rois": rois_to_lists(getattr(dataset, "rois", {})),
        "files": [file_stamp(sample.path) for sample in dataset.samples],
    }


def _key_difference(stored: dict[str, Any], key: dict[str, Any]) -> str | None:
    """Why a stored cache key does not fit ``key`` (naming a file where files differ), or None."""
    if stored.get("encoder_state_sha256") != key["encoder_state_sha256"] or \
            stored.get("encoder_weights_sha256") != key["encoder_weights_sha256"]:
        return "it holds another encoder's features"
    if stored.get("normalization") != key["normalization"] or stored.get("geometries") != key["geometries"] \
            or stored.get("tile") != key["tile"]:
        return "it was computed at another input size or normalisation"
    if stored.get("rois", {}) != key["rois"]:
        return "it was computed with other regions of interest"
    old = {stamp[0]: stamp for stamp in stored.get("files", [])}
    new = {stamp[0]: stamp for stamp in key["files"]}
    for path in new:
        if path not in old:
            return f"{path} is new"
        if old[path] != new[path]:
            return f"{path} changed"
    gone = [path for path in old if path not in new]
    if gone:
        return f"{gone[0]} is gone"
    if [s[0] for s in stored["files"]] != [s[0] for s in key["files"]]:
        return "the files are in another order"
    return None


def open_disk_cache(directory: Path, key: dict[str, Any]) -> tuple[FeatureCache | None, str]:
    """(the reusable cache in ``directory``, "reused ...") or (None, why it cannot be reused)."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return None, "no complete cache there yet"
    try:
        stored = json.loads(manifest.read_text())
        why = _key_difference(stored["key"], key)
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"its manifest {manifest} is unreadable"
    if why:
        return None, why
    try:
        features = [np.load(directory / f"scale{s}.npy", mmap_mode="r") for s in range(len(stored["shapes"]))]
    except (OSError, ValueError) as error:
        return None, f"a feature file is truncated or unreadable ({error})"
    if [list(f.shape) for f in features] != stored["shapes"]:
        return None, "a feature file does not have the recorded shape"
    return FeatureCache(features, stored["class_names"], f"reused from {directory}"), "reused"


@torch.no_grad()
def build_feature_source(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device,
    storage: str = "memory",
    directory: str | Path | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    show_progress: bool = False,
) -> FeatureSource:
    """Encode ``dataset`` once with ``model.encode`` into memory or ``directory`` (``storage='disk'``).

    ``storage='none'`` returns :class:`LiveFeatures` without encoding anything up front.
    """
    if storage not in CACHE_CHOICES:
        raise ValueError(f"unknown feature cache '{storage}': use one of {', '.join(CACHE_CHOICES)}")
    if storage == "none":
        return LiveFeatures(model, dataset, dataset_class_names(dataset))
    groups = dataset.geometry_groups()
    if len(groups) > 1:
        parts = [
            (indices, build_feature_source(
                model, dataset.subset(indices), device, storage,
                None if directory is None else Path(directory) / str(geometry), batch_size, num_workers, show_progress,
            ))
            for geometry, indices in groups.items()
        ]
        return GeometryFeatures(parts, dataset_class_names(dataset))
    origin = "computed"
    if storage == "disk":
        if directory is None:
            raise ValueError("a disk feature cache needs a folder")
        directory = Path(directory)
        key = cache_key(model, dataset)
        cache, why = open_disk_cache(directory, key)
        if cache is not None:
            return cache
        origin = f"rebuilt in {directory}: {why}" if (directory / MANIFEST).is_file() else f"computed in {directory}"
        (directory / MANIFEST).unlink(missing_ok=True)  # an interrupted rebuild is never trusted
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    features: list[torch.Tensor | np.ndarray] = []
    class_names: list[str] = []
    start = 0
    for item in tqdm(loader, desc="caching encoder features", disable=not show_progress, leave=False):
        encoded = [f.float().cpu() for f in model.encode(item["image"].to(device))]
        if not features:
            features = [_allocate(len(dataset), f.shape[1:], storage, directory, s) for s, f in enumerate(encoded)]
        stop = start + len(encoded[0])
        for store, f in zip(features, encoded):
            store[start:stop] = f.numpy() if isinstance(store, np.ndarray) else f
        class_names.extend(item["class_name"])
        start = stop
    if storage == "disk":
        for store in features:
            store.flush()
        manifest = {"key": key, "shapes": [list(store.shape) for store in features], "class_names": class_names}
        atomic_write_text(directory / MANIFEST, json.dumps(manifest))
    return FeatureCache(features, class_names, origin)


def _allocate(
    count: int, shape: torch.Size, storage: str, directory: str | Path | None, scale: int
) -> torch.Tensor | np.ndarray:
    """An empty (count, *shape) float32 store in memory or as ``directory/scale<s>.npy``."""
    if storage == "memory":
        return torch.empty(count, *shape)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(folder / f"scale{scale}.npy", mode="w+", dtype=np.float32, shape=(count, *shape))

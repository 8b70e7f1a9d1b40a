"""Frozen-encoder features computed once and reused every epoch.

Training inputs are not augmented and the encoder is frozen, so its features of an image never
change: computing them once turns every later epoch into bottleneck + decoder work only.
Features live in memory (tensors) or on disk (``.npy`` memory maps, for datasets larger than
RAM). ``LiveFeatures`` is the uncached path (the encoder runs on every batch), kept for
comparison and for very large datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

CACHE_CHOICES = ("memory", "disk", "none")


class FeatureSource(Protocol):
    """Encoder features by dataset index."""

    class_names: list[str]

    def __len__(self) -> int: ...

    def batch(self, indices: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        """Indices (B,) -> encoder features [(B, C_s, H_s, W_s) for each scale s] on ``device``."""
        ...


class FeatureCache:
    """Stored features: ``features[s]`` is (N, C_s, H_s, W_s), a tensor or a disk memory map."""

    def __init__(self, features: list[torch.Tensor | np.ndarray], class_names: list[str]):
        self.features = features
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.class_names)

    def batch(self, indices: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        index = indices.cpu().numpy()
        return [torch.as_tensor(np.asarray(f[index])).to(device) for f in self.features]


class LiveFeatures:
    """No cache: loads the images and runs the encoder for every batch."""

    def __init__(self, model: torch.nn.Module, dataset: Dataset, class_names: list[str]):
        self.model = model
        self.dataset = dataset
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.class_names)

    def batch(self, indices: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        images = torch.stack([self.dataset[int(i)]["image"] for i in indices]).to(device)
        return self.model.encode(images)


def dataset_class_names(dataset: Dataset) -> list[str]:
    """The class of every item of an :class:`ssmad.data.AnomalyDataset`, in index order."""
    return [sample.class_name for sample in dataset.samples]


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
    if storage == "disk" and directory is None:
        raise ValueError("a disk feature cache needs a folder")
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
    for store in features:
        if isinstance(store, np.memmap):
            store.flush()
    return FeatureCache(features, class_names)


def _allocate(
    count: int, shape: torch.Size, storage: str, directory: str | Path | None, scale: int
) -> torch.Tensor | np.ndarray:
    """An empty (count, *shape) float32 store in memory or as ``directory/scale<s>.npy``."""
    if storage == "memory":
        return torch.empty(count, *shape)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(folder / f"scale{scale}.npy", mode="w+", dtype=np.float32, shape=(count, *shape))

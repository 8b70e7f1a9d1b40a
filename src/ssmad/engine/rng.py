"""Random state: seeding, saving and restoring every generator a run uses, and the epoch order.

A resumed run restores each process's torch (CPU and CUDA), NumPy and Python states, so it
draws the same noise, drop-path and order as an uninterrupted run.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

DEFAULT_SEED = 0


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    """This process's torch (CPU and CUDA), NumPy and Python RNG states as plain values."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _to_lists(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def epoch_order(seed: int, epoch: int, count: int) -> torch.Tensor:
    """The training order of ``count`` images in ``epoch`` (0-based): a permutation (count,)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(count, generator=generator)


def epoch_batches(seed: int, epoch: int, groups: list[list[int]], batch_size: int) -> list[torch.Tensor]:
    """The batches (batch_size,) of ``epoch``: each group's indices (images of one geometry) in a
    seeded random order, cut into full batches (the last incomplete one of each group waits for
    another epoch's order), the batches of all groups then shuffled together. With one group
    these are exactly :func:`epoch_order`'s consecutive batches, as before geometries existed."""
    batches = []
    for number, indices in enumerate(groups):
        order = torch.tensor(indices)[epoch_order(seed, epoch * len(groups) + number, len(indices))]
        full = len(order) // batch_size * batch_size
        batches.extend(order[:full].view(-1, batch_size))
    if len(groups) > 1:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch + 7_919)
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return batches

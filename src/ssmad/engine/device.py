"""``--device auto|cpu|cuda|mps`` -> a torch.device, with a clear error when it is absent."""

from __future__ import annotations

import torch

AUTO_DEVICE = "auto"  # CUDA, then Apple MPS, then CPU
DEVICE_CHOICES = (AUTO_DEVICE, "cpu", "cuda", "mps")


def resolve_device(name: str = AUTO_DEVICE) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an unavailable explicit choice is an error."""
    if name == AUTO_DEVICE:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.split(":")[0] not in DEVICE_CHOICES:
        raise ValueError(f"unknown device '{name}': use one of {', '.join(DEVICE_CHOICES)}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but this PyTorch build sees no CUDA GPU: use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for but Apple MPS is not available: use --device cpu")
    return torch.device(name)

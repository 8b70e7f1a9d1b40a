"""Mixed precision for training: ``--amp none | bf16 | fp16`` (fp16 with a gradient scaler)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

NO_AMP = "none"
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AMP_CHOICES = (NO_AMP, *_AMP_DTYPES)


def check_amp(amp: str) -> None:
    """Refuse an unknown ``--amp`` value, naming the known ones."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"unknown --amp '{amp}': use one of {', '.join(AMP_CHOICES)}")


def autocast(amp: str, device: torch.device) -> AbstractContextManager:
    """The autocast context of ``amp`` on ``device`` (nothing for "none")."""
    return torch.autocast(device.type, dtype=_AMP_DTYPES[amp]) if amp != NO_AMP else nullcontext()


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler: active for fp16 only (bf16 has float32's range)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")

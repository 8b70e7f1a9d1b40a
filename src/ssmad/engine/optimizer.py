"""The AdamW optimiser and its weight-decay groups, as the reference framework builds them.

MambaAD's official code (ADer, ``optim.get_optim`` with ``filter_bias_and_bn=True``) decays every
trainable parameter except those with one dimension (biases, batch- and layer-norm weights, the
SSM skip ``Ds``) and those whose name ends in ``.bias``. Its SS2D marks ``A_logs`` and ``Ds``
with a ``_no_weight_decay`` attribute, but its optimiser never reads it, so ``A_logs`` (two
dimensions) is decayed there and is decayed here; ssmad does not carry the unread flag.
"""

from __future__ import annotations

import torch
from torch import nn


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: trainable >= 2-D non-bias parameters decayed, the rest not."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.dim() == 1 or name.endswith(".bias") else decay).append(parameter)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model`` with :func:`decay_groups`."""
    return torch.optim.AdamW(decay_groups(model, weight_decay), lr=lr)

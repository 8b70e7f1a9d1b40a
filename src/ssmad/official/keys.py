"""Names and layouts: the official MambaAD / Pyramid-Mamba state dict -> ssmad's.

The official model (ADer's ``MAMBAAD``) has three parts: ``net_t`` (the timm ResNet encoder),
``mff_oce`` (the bottleneck) and ``net_s`` (``MambaUPNet``, the decoder). Per part:

- ``net_t.<name>`` -> ``encoder.<name>``: timm's ResNet names are torchvision's for conv1, bn1
  and layer1-3, which is what ssmad's encoder uses;
- ``mff_oce.<name>`` -> ``bottleneck.<name>`` (same module names);
- ``net_s.layers_up.<i>`` -> ``decoder.stages.<i>``, its ``upsample`` -> ``expand``, its
  ``blocks.<j>`` (LSS modules) -> ``lss_modules.<j>``, whose ``smm_blocks.<b>.ln_1`` ->
  ``blocks.<b>.norm``, ``smm_blocks.<b>.self_attention`` -> ``blocks.<b>.ss2d``,
  ``conv1b5/conv55/conv1a5`` -> ``local.paths.0.{0,1,2}.0``, ``conv1b7/conv77/conv1a7`` ->
  ``local.paths.1.{0,1,2}.0`` and ``finalconv11`` -> ``fuse``.

Direction order: the official SS2D stacks the K/2 forward directions, then their reversals
(f0, f1, .., r0, r1, ..); ssmad interleaves them (f0, r0, f1, r1, ..). The per-direction
parameters (``x_proj_weight``, ``dt_projs_weight``, ``dt_projs_bias``, ``A_logs``, ``Ds``) are
permuted along their direction axis accordingly.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

# (official pattern, ssmad replacement), tried in order; patterns match the whole name.
_DECODER_RULES: tuple[tuple[str, str], ...] = (
    (r"layers_up\.(\d+)\.upsample\.(expand|norm)\.(\w+)", r"decoder.stages.\1.expand.\2.\3"),
    (r"layers_up\.(\d+)\.blocks\.(\d+)\.smm_blocks\.(\d+)\.ln_1\.(\w+)", r"decoder.stages.\1.lss_modules.\2.blocks.\3.norm.\4"),
    (
        r"layers_up\.(\d+)\.blocks\.(\d+)\.smm_blocks\.(\d+)\.self_attention\.((?:in_proj|conv2d|out_norm|out_proj)\.\w+|x_proj_weight|dt_projs_weight|dt_projs_bias|A_logs|Ds)",
        r"decoder.stages.\1.lss_modules.\2.blocks.\3.ss2d.\4",
    ),
    (r"layers_up\.(\d+)\.blocks\.(\d+)\.conv1b5\.0\.(\w+)", r"decoder.stages.\1.lss_modules.\2.local.paths.0.0.0.\3"),
    (r"layers_up\.(\d+)\.blocks\.(\d+)\.conv55\.0\.(\w+)", r"decoder.stages.\1.lss_modules.\2.local.paths.0.1.0.\3"),
    (r"layers_up\.(\d+)\.blocks\.(\d+)\.conv1a5\.0\.(\w+)", r"decoder.stages.\1.lss_modules.\2.local.paths.0.2.0.\3"),
    (r"layers_up\.(\d+)\.blocks\.(\d+)\.conv1b7\.0\.(\w+)", r"decoder.stages.\1.lss_modules.\2.local.paths.1.0.0.\3"),
    (r"layers_up\.(\d+)\.blocks\.(\d+)\.conv77\.0\.(\w+)", r"decoder.stages.\1.lss_modules.\2.local.paths.1.1.0.\3"),
    (r"layers_up\.(\d+)\.blocks\.(\d+)\.conv1a7\.0\.(\w+)", r"decoder.stages.\1.lss_modules.\2.local.paths.1.2.0.\3"),
    (r"layers_up\.(\d+)\.blocks\.(\d+)\.finalconv11\.(\w+)", r"decoder.stages.\1.lss_modules.\2.fuse.\3"),
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in _DECODER_RULES)

# The official scan index tables (``SCANS``/``HSCANS``): recomputed by ssmad, checked, not stored.
SCAN_TABLE = re.compile(r"layers_up\.\d+\.blocks\.\d+\.smm_blocks\.\d+\.self_attention\.scans\.(index_flat(?:_inv)?\d?)")

# Branch names of the older official layout (the released MambaAD weights), which the current
# official code and ssmad do not have.
OLD_LAYOUT_BRANCHES = ("conv33", "conv1b3", "conv1a3")

DIRECTIONAL = ("x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds")


def decoder_key(official: str) -> str | None:
    """ssmad key of an official ``net_s`` key (without the ``net_s.`` prefix), or None."""
    for pattern, replacement in _COMPILED:
        if pattern.fullmatch(official):
            return pattern.sub(replacement, official)
    return None


def direction_permutation(num_directions: int) -> Tensor:
    """Official direction of each ssmad direction: (K,) long, ssmad[s] = official[perm[s]].

    Official order f0..f_{K/2-1}, r0..r_{K/2-1}; ssmad order f0, r0, f1, r1, ...
    """
    half = num_directions // 2
    return torch.arange(num_directions).view(2, half).t().reshape(-1)


def to_ssmad_directions(name: str, tensor: Tensor, num_directions: int) -> Tensor:
    """Reorder a per-direction SS2D parameter from the official to ssmad's direction order.

    x_proj_weight (K, R+2N, D), dt_projs_weight (K, D, R), dt_projs_bias (K, D): along dim 0;
    A_logs (K*D, N) and Ds (K*D,): along their K blocks of D rows. Other tensors: unchanged.
    """
    leaf = name.rsplit(".", 1)[-1]
    if leaf not in DIRECTIONAL:
        return tensor
    perm = direction_permutation(num_directions)
    blocks = tensor.reshape(num_directions, -1, *tensor.shape[1:]) if leaf in ("A_logs", "Ds") else tensor
    return blocks[perm].reshape(tensor.shape).contiguous()

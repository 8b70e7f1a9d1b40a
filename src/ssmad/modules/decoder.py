"""The state-space decoder of MambaAD / Pyramid-Mamba: four stages of LSS/CSS modules."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ssmad.modules.blocks import LSSModule
from ssmad.modules.patch_expand import PatchExpand


def module_sizes(depth: int) -> list[int]:
    """Blocks per module of a stage: modules of 3 when depth % 3 == 0, else of 2 (official
    rule), and, for an odd depth that is not a multiple of 3, modules of 1."""
    size = 3 if depth % 3 == 0 else 2 if depth % 2 == 0 else 1
    return [size] * (depth // size)


def drop_path_rates(total_blocks: int, max_rate: float) -> list[float]:
    """Per-block drop-path rates in decoder order: linear from ``max_rate`` at the first
    (deepest, lowest-resolution) block down to 0 at the last, as the official
    ``linspace(0, rate, n)[::-1]``."""
    if total_blocks == 1:
        return [0.0]
    return [max_rate * (total_blocks - 1 - i) / (total_blocks - 1) for i in range(total_blocks)]


DROP_PATH_RULES = ("per_block", "official")


def module_drop_paths(drop_paths: list[float], rule: str) -> list[list[float]]:
    """A stage's per-block rates (one per block, in order) -> the rates of each module's blocks.

    "per_block": every block keeps its own rate. "official": module j's blocks all get the
    stage's j-th rate, as the official ``VSSLayer_up`` passes ``drop_path[i]`` to module i.
    """
    sizes = module_sizes(len(drop_paths))
    if rule == "official":
        return [[drop_paths[j]] * size for j, size in enumerate(sizes)]
    starts = [sum(sizes[:j]) for j in range(len(sizes))]
    return [drop_paths[start : start + size] for start, size in zip(starts, sizes)]


class DecoderStage(nn.Module):
    """PatchExpand (in_dim -> dim channels, 2x resolution; none when in_dim is None), then
    LSS/CSS modules. (B, H, W, in_dim) -> (B, 2H, 2W, dim), or (B, H, W, dim) -> same.
    ``drop_path_rule`` distributes ``drop_paths`` over the modules (:func:`module_drop_paths`).
    """

    def __init__(
        self,
        in_dim: int | None,
        dim: int,
        drop_paths: list[float],
        lec_kernel_sizes: tuple[int, ...],
        drop_path_rule: str = "per_block",
        **ss2d_kwargs: Any,
    ) -> None:
        super().__init__()
        self.expand = PatchExpand(in_dim, dim) if in_dim is not None else nn.Identity()
        self.lss_modules = nn.Sequential(
            *(LSSModule(dim, rates, lec_kernel_sizes, **ss2d_kwargs) for rates in module_drop_paths(drop_paths, drop_path_rule))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lss_modules(self.expand(x))


class MambaDecoder(nn.Module):
    """Four-stage decoder. Stage widths ``dims`` = [2*C3, C3, C2, C1] (encoder channels C_i);
    each stage but the first starts with PatchExpand from the previous stage's width.

    Input z (B, dims[0], H/32, W/32), channels-first; outputs [g1, g2, g3] in the encoder's
    order: (B, C1, H/4, W/4), (B, C2, H/8, W/8), (B, C3, H/16, W/16), channels-first.

    Args:
        dims: stage widths (ResNet34: [512, 256, 128, 64]).
        depths: HSS blocks per stage (paper [3, 4, 6, 3]).
        drop_path_rate: largest drop-path rate (first block), falling linearly to 0.
        drop_path_rule: "per_block" or "official" (see :func:`module_drop_paths`).
        lec_kernel_sizes: LEC depthwise kernels.
        ss2d_kwargs: passed to every SS2D (scan order, directions, pyramid levels, ...).
    """

    def __init__(
        self,
        dims: Sequence[int],
        depths: Sequence[int] = (3, 4, 6, 3),
        drop_path_rate: float = 0.2,
        lec_kernel_sizes: tuple[int, ...] = (5, 7),
        drop_path_rule: str = "per_block",
        **ss2d_kwargs: Any,
    ) -> None:
        super().__init__()
        rates = drop_path_rates(sum(depths), drop_path_rate)
        stages = []
        start = 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            in_dim = dims[i - 1] if i > 0 else None
            stage_rates = rates[start : start + depth]
            stages.append(DecoderStage(in_dim, dim, stage_rates, lec_kernel_sizes, drop_path_rule, **ss2d_kwargs))
            start += depth
        self.stages = nn.ModuleList(stages)
        for module in self.modules():  # official init of the Linear and LayerNorm layers
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        x = z.permute(0, 2, 3, 1)  # (B, h, w, C): channels-last inside the decoder
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i > 0:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs[::-1]

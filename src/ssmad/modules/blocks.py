"""Decoder building blocks: HSS block, LEC local branch, LSS / CSS module.

Everything here is channels-last, (B, H, W, C), except inside the LEC convolutions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ssmad.modules.ss2d import SS2D


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability ``rate``
    and scale the kept ones by 1 / (1 - rate). Identity in eval mode."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B, ...)."""
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


class HSSBlock(nn.Module):
    """Hybrid state-space block: x + DropPath(SS2D(LayerNorm(x))), (B, H, W, C) -> same.

    ``ss2d_kwargs`` go to :class:`SS2D` (scan order, directions, pyramid levels, ...).
    """

    def __init__(self, dim: int, drop_path: float = 0.0, **ss2d_kwargs: Any) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ss2d = SS2D(dim, **ss2d_kwargs)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.ss2d(self.norm(x)))


def conv_norm_act(channels: int, kernel_size: int, depthwise: bool) -> nn.Sequential:
    """Conv (1x1 with bias, or depthwise kxk without) -> InstanceNorm -> SiLU, (B, C, H, W)."""
    conv = nn.Conv2d(
        channels,
        channels,
        kernel_size,
        padding=kernel_size // 2,
        groups=channels if depthwise else 1,
        bias=not depthwise,
    )
    return nn.Sequential(conv, nn.InstanceNorm2d(channels), nn.SiLU())


class LocalityEnhancedConv(nn.Module):
    """LEC: parallel paths conv1x1 -> depthwise kxk -> conv1x1 (each + InstanceNorm + SiLU).

    (B, C, H, W) -> (B, len(kernel_sizes) * C, H, W), the paths' outputs concatenated.
    """

    def __init__(self, channels: int, kernel_sizes: tuple[int, ...] = (5, 7)) -> None:
        super().__init__()
        self.paths = nn.ModuleList(
            nn.Sequential(
                conv_norm_act(channels, 1, depthwise=False),
                conv_norm_act(channels, k, depthwise=True),
                conv_norm_act(channels, 1, depthwise=False),
            )
            for k in kernel_sizes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([path(x) for path in self.paths], dim=1)


class LSSModule(nn.Module):
    """LSS module (MambaAD) = CSS module (Pyramid-Mamba, when the blocks use pyramid levels).

    Global branch: M = len(drop_paths) HSS blocks in sequence (the paper's M sequential PSS).
    Local branch: LEC with kernels 5 and 7. Fusion: conv1x1(concat(global, local5, local7)) + x.
    (B, H, W, C) -> (B, H, W, C).

    Args:
        dim: channels C.
        drop_paths: drop-path rate of each HSS block, one per block.
        lec_kernel_sizes: depthwise kernel sizes of the LEC paths.
        ss2d_kwargs: passed to every block's :class:`SS2D`.
    """

    def __init__(
        self,
        dim: int,
        drop_paths: list[float],
        lec_kernel_sizes: tuple[int, ...] = (5, 7),
        **ss2d_kwargs: Any,
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(HSSBlock(dim, rate, **ss2d_kwargs) for rate in drop_paths))
        self.local = LocalityEnhancedConv(dim, lec_kernel_sizes)
        self.fuse = nn.Conv2d((1 + len(lec_kernel_sizes)) * dim, dim, 1)
        for conv in self.modules():  # as the official code: the SS2D convolutions too
            if isinstance(conv, nn.Conv2d):
                init_conv_fan_out(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_cf = x.permute(0, 3, 1, 2)  # (B, C, H, W) view in channels-last memory: no copy
        global_cf = self.blocks(x).permute(0, 3, 1, 2)
        fused = self.fuse(torch.cat([global_cf, self.local(x_cf)], dim=1))
        return fused.permute(0, 2, 3, 1) + x


def init_conv_fan_out(conv: nn.Conv2d) -> None:
    """Official MambaAD init of the LSS convolutions: N(0, 2 / fan_out), zero bias."""
    fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)

"""PatchExpand: 2x spatial upsampling by a linear expansion (Swin-Unet / VMamba decoders)."""

from __future__ import annotations

import torch
from torch import nn


class PatchExpand(nn.Module):
    """Linear in_dim -> 4 * out_dim, rearranged to 2x resolution with out_dim channels, LayerNorm.

    (B, H, W, in_dim) -> (B, 2H, 2W, out_dim). The papers' case is out_dim = in_dim / 2
    (Linear C -> 2C); other widths serve encoders whose channels do not halve (MobileNetV2).
    Each input pixel's outputs fill its 2x2 block in the order (row offset, column offset,
    channel), as ``b h w (p1 p2 c) -> b (h p1) (w p2) c``.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.expand = nn.Linear(in_dim, 4 * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        x = self.expand(x).view(batch, height, width, 2, 2, self.out_dim)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, self.out_dim)
        return self.norm(x)

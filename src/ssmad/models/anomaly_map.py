"""Anomaly maps from encoder/decoder features: 1 - cosine similarity per scale, upsampled,
summed (or, ``scale="official"``, divided as the reference framework does), blurred; image
score by the model's rule (``ssmad.models.image_score``: the mean of the top 1 % by default, the
maximum as the reference framework)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ssmad.models.image_score import DEFAULT_IMAGE_SCORE, image_scores


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian (2r+1,), r = int(truncate * sigma + 0.5), as scipy.ndimage
    (sigma 4 -> 33 taps)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def symmetric_indices(size: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices (size + 2*radius,) padding a side by half-sample symmetric reflection
    (d c b a | a b c d | d c b a), scipy.ndimage's "reflect" mode, for any radius."""
    positions = torch.arange(-radius, size + radius, device=device) % (2 * size)
    return torch.where(positions < size, positions, 2 * size - 1 - positions)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps, equal to scipy.ndimage.gaussian_filter(m, sigma)
    on each map (truncate 4, "reflect" borders). sigma = 0 returns the maps unchanged."""
    if sigma == 0:
        return maps
    kernel = gaussian_kernel1d(sigma).to(device=maps.device, dtype=maps.dtype)
    radius = (kernel.numel() - 1) // 2
    batch, height, width = maps.shape
    weight = kernel.view(1, 1, -1)
    rows = maps.index_select(2, symmetric_indices(width, radius, maps.device))  # (B, H, W + 2r)
    rows = F.conv1d(rows.reshape(batch * height, 1, -1), weight).view(batch, height, width)
    cols = rows.transpose(1, 2).index_select(2, symmetric_indices(height, radius, maps.device))
    cols = F.conv1d(cols.reshape(batch * width, 1, -1), weight).view(batch, width, height)
    return cols.transpose(1, 2).contiguous()


def cosine_distance_map(
    enc_features: Sequence[torch.Tensor], dec_features: Sequence[torch.Tensor], size: tuple[int, int]
) -> torch.Tensor:
    """Sum over scales of 1 - cos(f_i, g_i) over channels, each upsampled bilinearly
    (align_corners=True, as the reference) to ``size``: [(B, C_i, h_i, w_i)] x 2 -> (B, H, W)."""
    total = None
    for f, g in zip(enc_features, dec_features):
        distance = 1.0 - F.cosine_similarity(f.float(), g.float(), dim=1)  # (B, h, w)
        distance = F.interpolate(distance.unsqueeze(1), size=size, mode="bilinear", align_corners=True)
        total = distance if total is None else total + distance
    return total.squeeze(1)


def anomaly_maps_and_scores(
    enc_features: Sequence[torch.Tensor],
    dec_features: Sequence[torch.Tensor],
    size: tuple[int, int],
    sigma: float,
    scale: str = "sum",
    image_score: str = DEFAULT_IMAGE_SCORE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blurred maps (B, H, W) and image scores (B,) of each blurred map by the rule ``image_score``.

    ``scale``: "sum" keeps the sum over the S scales; "official" divides it by S x S, as ADer's
    ``cal_anomaly_map(amap_mode="add")`` divides by len(scales) x sum(weights) with unit weights.
    """
    maps = cosine_distance_map(enc_features, dec_features, size)
    if scale == "official":
        maps = maps / len(enc_features) ** 2
    maps = gaussian_blur(maps, sigma)
    return maps, image_scores(maps, image_score)


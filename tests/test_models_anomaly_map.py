"""Anomaly maps: the separable blur against scipy and a slow direct 2-D convolution, the
cosine map on hand cases, and shapes at the input size (a full model at 320x320)."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from ssmad.models import build_model
from ssmad.models.anomaly_map import anomaly_maps_and_scores, cosine_distance_map, gaussian_blur, gaussian_kernel1d


def direct_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """2-D Gaussian weights summed over every output pixel's window, half-sample symmetric borders."""
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    height, width = image.shape

    def reflect(i, n):
        i = i % (2 * n)
        return i if i < n else 2 * n - 1 - i

    out = np.zeros_like(image)
    for r in range(height):
        rows = [reflect(r + o, height) for o in offsets]
        for c in range(width):
            cols = [reflect(c + o, width) for o in offsets]
            out[r, c] = (image[np.ix_(rows, cols)] * weights).sum()
    return out


def test_kernel_has_33_taps_for_sigma_4():
    kernel = gaussian_kernel1d(4.0)
    assert kernel.numel() == 33 and math.isclose(kernel.sum().item(), 1.0)


@pytest.mark.parametrize("shape", [(24, 20), (9, 40)])
def test_blur_matches_direct_convolution_and_scipy(shape):
    rng = np.random.default_rng(0)
    maps = rng.random((2,) + shape)
    blurred = gaussian_blur(torch.from_numpy(maps), 4.0).numpy()
    for image, result in zip(maps, blurred):
        np.testing.assert_allclose(result, direct_blur(image, 4.0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(result, gaussian_filter(image, sigma=4.0), rtol=1e-10, atol=1e-12)


def test_cosine_map_hand_cases():
    f = [torch.randn(2, c, s, s) for c, s in ((4, 8), (6, 4), (8, 2))]
    zero = cosine_distance_map(f, [2.5 * t for t in f], (32, 32))  # same direction: distance 0
    assert zero.shape == (2, 32, 32) and zero.abs().max() < 1e-6
    opposite = cosine_distance_map(f, [-t for t in f], (32, 32))  # 1 - (-1) = 2 per scale
    torch.testing.assert_close(opposite, torch.full((2, 32, 32), 6.0))
    maps, scores = anomaly_maps_and_scores(f, [-t for t in f], (32, 32), sigma=4.0)
    torch.testing.assert_close(scores, maps.flatten(1).max(dim=1).values)


def test_official_map_scale_is_the_reference_frameworks():
    """ADer's cal_anomaly_map(amap_mode="add"): sum of the upsampled scales / (scales x sum of
    unit weights), then scipy's Gaussian filter; ssmad's "sum" is 9 times that for 3 scales."""
    torch.manual_seed(0)
    f = [torch.randn(2, c, s, s) for c, s in ((4, 16), (6, 8), (8, 4))]
    g = [t + 0.5 * torch.randn_like(t) for t in f]
    total = sum(
        torch.nn.functional.interpolate((1 - torch.cosine_similarity(a, b, dim=1))[:, None], size=(32, 32), mode="bilinear", align_corners=True)[:, 0]
        for a, b in zip(f, g)
    ).double().numpy()
    reference = np.stack([gaussian_filter(m / (3 * 3), sigma=4.0) for m in total])
    official, _ = anomaly_maps_and_scores(f, g, (32, 32), sigma=4.0, scale="official")
    summed, _ = anomaly_maps_and_scores(f, g, (32, 32), sigma=4.0)
    np.testing.assert_allclose(official.numpy(), reference, rtol=1e-5)
    torch.testing.assert_close(summed, 9 * official)


def test_single_scale_upsampling_is_bilinear_align_corners():
    f = torch.tensor([[1.0, 0.0]]).view(1, 2, 1, 1).repeat(1, 1, 1, 2)  # (1, 2, 1, 2): unit x-vectors
    g = f.clone()
    g[0, :, 0, 1] = torch.tensor([0.0, 1.0])  # right pixel orthogonal: distance 1 there
    distance = cosine_distance_map([f], [g], (1, 5))
    torch.testing.assert_close(distance, torch.tensor([[[0.0, 0.25, 0.5, 0.75, 1.0]]]))


def test_full_model_maps_at_320_with_hilbert_8_directions():
    torch.manual_seed(0)
    model = build_model(
        "mambaad", encoder="mobilenet_v2", encoder_weights="random", decoder_depths=(1, 1, 1, 1)
    ).eval()
    maps, scores = model.anomaly_map(torch.randn(2, 3, 320, 320))
    assert maps.shape == (2, 320, 320) and scores.shape == (2,)
    top = maps.flatten(1).sort(dim=1).values[:, -1024:]  # the default score: the top 1 % of 320 x 320 pixels
    assert torch.isfinite(maps).all() and torch.allclose(scores, top.mean(1))

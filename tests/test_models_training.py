"""A short training run on a synthetic texture: the loss falls and images with pasted defects
score higher than clean ones; the two training losses on hand-computed cases."""

import math

import pytest
import torch
from torch import nn

from ssmad.models import AnomalyModel, ModelConfig
from ssmad.models.anomaly_model import reconstruction_loss
from ssmad.modules.encoder_base import FeatureEncoder, FeatureInfo


class TinyEncoder(FeatureEncoder):
    """Three fixed random conv stages (16, 32, 64 channels at strides 4, 8, 16): a frozen
    encoder small enough for a CPU test, with features of a healthy scale."""

    def __init__(self) -> None:
        super().__init__("tiny")
        self.feature_info = [FeatureInfo(16, 4), FeatureInfo(32, 8), FeatureInfo(64, 16)]
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), nn.ReLU()),
                nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU()),
            ]
        )
        self.freeze()

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        features, x = [], images
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def textures(count: int, generator: torch.Generator, size: int = 64) -> torch.Tensor:
    """Diagonal stripes with random phase and a little noise, (count, 3, size, size)."""
    coords = torch.arange(size, dtype=torch.float32)
    diagonal = coords[:, None] + coords[None, :]  # (size, size)
    phase = torch.rand(count, 1, 1, 1, generator=generator) * 2 * math.pi
    colour = torch.tensor([1.0, 0.5, -0.5]).view(1, 3, 1, 1)
    stripes = torch.sin(diagonal * (2 * math.pi / 8) + phase) * colour
    return stripes + 0.1 * torch.randn(count, 3, size, size, generator=generator)


def paste_defects(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A 14x14 flat bright square at a random place in every image."""
    out = images.clone()
    for image in out:
        r, c = torch.randint(4, 46, (2,), generator=generator).tolist()
        image[:, r : r + 14, c : c + 14] = torch.tensor([2.0, -2.0, 2.0]).view(3, 1, 1)
    return out


@pytest.mark.slow
def test_training_lowers_loss_and_separates_defects():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    # The pyramid_mamba settings at tiny widths, with the cosine loss: the random encoder's
    # features are small (mean squares 0.06, 0.007, 0.001), and MSE would mostly teach the
    # decoder to shrink its output, not to match the directions the anomaly map compares.
    config = ModelConfig(encoder_weights="random", decoder_depths=(1, 1, 1, 1), loss="cosine")
    model = AnomalyModel(config, TinyEncoder())
    train = textures(32, generator)
    features = model.encode(train)  # frozen encoder: computed once
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    losses = []
    for _ in range(100):
        batch = torch.randint(0, 32, (8,), generator=generator)
        enc = [f[batch] for f in features]
        loss = model.loss(enc, model.decode(enc))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10

    model.eval()
    clean = textures(8, generator)
    _, clean_scores = model.anomaly_map(clean)
    _, defect_scores = model.anomaly_map(paste_defects(clean, generator))
    auroc = (defect_scores[:, None] > clean_scores[None, :]).float().mean()  # pairwise ranking
    assert auroc >= 0.9, (clean_scores, defect_scores)


def test_losses_on_hand_computed_cases():
    target = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # (1, 2, 1, 2): flattened (1, 0, 0, 2)
    assert abs(float(reconstruction_loss(target, target, "cosine"))) < 1e-6
    assert abs(float(reconstruction_loss(target, -3 * target, "cosine")) - 2.0) < 1e-6  # opposite: 1 - (-1)
    assert abs(float(reconstruction_loss(target, 5 * target, "cosine"))) < 1e-6  # scale does not matter
    orthogonal = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]]]])
    assert abs(float(reconstruction_loss(target, orthogonal, "cosine")) - 1.0) < 1e-6
    assert abs(float(reconstruction_loss(target, orthogonal, "mse")) - (1 + 1 + 0 + 4) / 4) < 1e-6

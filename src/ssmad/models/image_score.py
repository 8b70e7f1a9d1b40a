"""The image score: one number per anomaly map, the value image thresholds compare with.

Rules (``ModelConfig.image_score``):

- ``"top_mean:F"`` (the default, ``top_mean:0.01``): the mean of the ``F`` highest fraction of the
  map's pixels (at least one pixel). A defect covers a patch of pixels; a few bright pixels of a
  normal surface texture (e.g. where the encoder's zero padding meets it along the border) do
  not, so the mean of the top 1 % ranks defects above normals more often than the maximum does:
  measured on bottle and KolektorSDD, docs/decisions.md "Image score".
- ``"max"``: the map's maximum, the papers' and the official code's score (converted official
  checkpoints keep it, and runs written before this rule existed have it).

The score is computed from the blurred map at the model's resolution (a tiled image: from its
stitched map), so it does not depend on the image's own resolution.
"""

from __future__ import annotations

import torch

DEFAULT_IMAGE_SCORE = "top_mean:0.01"
LEGACY_IMAGE_SCORE = "max"  # the score of a run or export that names none


def parse_image_score(rule: str) -> float | None:
    """The top fraction of ``rule`` ("top_mean:F", 0 < F <= 1), or None for "max"; ValueError
    naming the accepted forms otherwise."""
    if rule == "max":
        return None
    kind, _, fraction = str(rule).partition(":")
    try:
        value = float(fraction)
    except ValueError:
        value = float("nan")
    if kind != "top_mean" or not 0.0 < value <= 1.0:
        raise ValueError(
            f"image score {rule!r} is not known: use 'max' (the papers') or 'top_mean:F', the mean of the "
            "highest fraction F of the map's pixels, 0 < F <= 1 (default top_mean:0.01)"
        )
    return value


def describe_image_score(rule: str) -> str:
    """A line for reports: ``rule`` and what it computes."""
    fraction = parse_image_score(rule)
    if fraction is None:
        return f"image score: {rule} (the maximum of the blurred map, the papers' score)"
    return f"image score: {rule} (the mean of the highest {100 * fraction:g} % of the blurred map's pixels)"


def image_scores(maps: torch.Tensor, rule: str = DEFAULT_IMAGE_SCORE) -> torch.Tensor:
    """Maps (B, H, W) -> image scores (B,) by ``rule`` (see the module docstring)."""
    fraction = parse_image_score(rule)
    flat = maps.flatten(1)
    if fraction is None:
        return flat.amax(dim=1)
    count = max(1, round(fraction * int(flat.shape[1])))  # a constant of the map's size in a traced graph
    return flat.topk(count, dim=1).values.mean(dim=1)


def with_legacy_image_score(model_config: dict) -> dict:
    """A stored ``ModelConfig`` dict of a version before image-score rules -> the same with its
    rule, the maximum (the migration of checkpoints, schema 4 -> 5, and exports, layout 3 -> 4)."""
    return {**model_config, "image_score": model_config.get("image_score", LEGACY_IMAGE_SCORE)}

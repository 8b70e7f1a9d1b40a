"""The official models' state dicts, rebuilt from ``../shared/fixtures`` (see its README).

Floating-point entry i is ``torch.manual_seed(i); base + scale * randn(shape)``; the integer
entries the fixtures leave out are made as the official code makes them: BatchNorm counters
zero, and each SS2D's scan tables (``SCANS``: the MambaAD code's order on its square map;
``HSCANS``: the Pyramid-Mamba code's raster tables at full, half and quarter side). ssmad's
Hilbert order was checked once against the official code's ``hilbert.decode`` (package
numpy-hilbert-curve) at sides 8-64: identical.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ssmad.ops import scan_order

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
PRESET_OF = {"mambaad": "mambaad", "pyramid": "pyramid_mamba"}
SCAN_OF = {"mambaad": "hilbert", "pyramid": "sweep"}
TABLE = re.compile(r".*layers_up\.(\d+)\..*\.scans\.index_flat(_inv)?(\d?)")


def load_fixture(name: str) -> dict:
    """``official_<name>.pt`` or skip when the shared fixtures are absent."""
    path = FIXTURES / f"official_{name}.pt"
    if not path.is_file():
        pytest.skip(f"official-code fixtures not found at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def scan_table(name: str, key: str) -> torch.Tensor:
    """An official scan index table (1, 1, L): order or inverse order on its level's map."""
    layer, inverse, level = TABLE.fullmatch(key).groups()
    side = 8 * 2 ** int(layer) // 2 ** int(level or 0)  # the official SCANS(size=8 * 2**i)
    order = scan_order(SCAN_OF[name], side, side)
    return (torch.argsort(order) if inverse else order).view(1, 1, -1)


def official_state_dict(name: str, fixture: dict) -> dict[str, torch.Tensor]:
    """The official ``{"mff_oce", "net_s"}`` state dict the fixture was computed with."""
    state = {}
    for i, entry in enumerate(fixture["parameters"]):
        torch.manual_seed(i)
        value = entry["base"] + entry["scale"] * torch.randn(entry["shape"])
        assert value.double().sum().item() == pytest.approx(entry["sum"], rel=1e-6, abs=1e-6), entry["name"]
        state[entry["name"]] = value
    for key in fixture["buffers_not_listed"]:
        state[key] = torch.zeros((), dtype=torch.long) if key.endswith("num_batches_tracked") else scan_table(name, key)
    return state


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|."""
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())


def with_encoder(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """``state`` plus a ``net_t.*`` ResNet34 (seeded random weights), as a full ADer checkpoint
    holds its timm encoder (whose names are torchvision's for conv1, bn1 and layer1-3)."""
    from ssmad.modules.resnet import ResNetEncoder

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = ResNetEncoder("resnet34").state_dict()
    return {**{f"net_t.{k}": v for k, v in encoder.items()}, **state}

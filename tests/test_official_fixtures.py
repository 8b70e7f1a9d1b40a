"""Official checkpoints converted into ssmad compute what the official code computed: decoder
features and the anomaly map against ``../shared/fixtures`` (ResNet34 widths, 256x256), through
the routed scan on its CPU backend (numba). The other backends run the same routed algorithm and
are held to the sequential reference in ``test_ops_routes``, ``test_ops_scan_torch`` and
``test_ops_scan_triton`` (the PyTorch backend would take minutes on these full decoders here)."""

from __future__ import annotations

import pytest
import torch
from official_fixtures import PRESET_OF, load_fixture, official_state_dict, relative_error

import ssmad
from ssmad.ops.backends import BACKEND_ENV

TOLERANCE = 1e-4


@pytest.fixture(scope="module", params=[(n, "numba") for n in ("mambaad", "pyramid")], ids=str)
def converted(request, tmp_path_factory):
    """(fixture, ssmad decoder features, ssmad anomaly map) of one official model on one backend."""
    name, backend = request.param
    fixture = load_fixture(name)
    state = official_state_dict(name, fixture)
    path = tmp_path_factory.mktemp(name) / "official.pth"
    torch.save({"net": {f"module.{k}": v for k, v in state.items()}, "epoch": 1}, path)  # ADer, DataParallel
    model = ssmad.convert(path, PRESET_OF[name], weights="random")
    enc = fixture["encoder_features"]
    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setenv(BACKEND_ENV, backend)
        dec = model.decode(enc)
        maps, _ = model.anomaly_map_from_features(enc, dec, (256, 256))
    return fixture, dec, maps


def test_decoder_features_equal_the_official_ones(converted):
    fixture, dec, _ = converted
    for ours, official in zip(dec, fixture["decoder_features"], strict=True):
        assert ours.shape == official.shape
        assert relative_error(ours, official) < TOLERANCE


def test_anomaly_map_equals_the_official_one_at_the_official_scale(converted):
    fixture, _, maps = converted
    assert maps.shape == fixture["anomaly_map"].shape
    assert relative_error(maps, fixture["anomaly_map"]) < TOLERANCE

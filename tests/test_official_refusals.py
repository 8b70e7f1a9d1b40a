"""What ``ssmad.convert`` refuses, with a message naming the file, the key and the fix:
nothing is half-loaded."""

from __future__ import annotations

import pytest
import torch
from official_fixtures import load_fixture, official_state_dict, with_encoder

import ssmad
from ssmad.cli import main
from ssmad.official import OfficialCheckpointError


@pytest.fixture(scope="module")
def states():
    return {name: official_state_dict(name, load_fixture(name)) for name in ("mambaad", "pyramid")}


def _refusal(tmp_path, state, preset="mambaad", **kwargs) -> str:
    path = tmp_path / "official.pth"
    torch.save(state, path)
    with pytest.raises(OfficialCheckpointError) as error:
        ssmad.convert(path, preset, **kwargs)
    assert str(path) in str(error.value)
    return str(error.value)


def test_the_older_layout_of_the_released_weights_is_recognised(states, tmp_path):
    state = dict(states["mambaad"])
    state["net_s.layers_up.0.blocks.0.conv33.0.weight"] = torch.zeros(512, 1, 3, 3)
    state["net_s.layers_up.0.blocks.0.conv1b3.0.weight"] = torch.zeros(512, 512, 1, 1)
    message = _refusal(tmp_path, state, weights="random")
    assert "older official layout" in message and "conv1b3, conv33" in message


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"net_s.layers_up.0.blocks.0.extra.weight": torch.zeros(3)}, "no place in ssmad's model"),
        ({"head.weight": torch.zeros(3)}, "belong to no part"),
        ({"mff_oce.extra.weight": torch.zeros(3)}, "without a place in the model (e.g. mff_oce.extra.weight"),
    ],
)
def test_keys_without_a_place_are_refused(states, tmp_path, change, expected):
    assert expected in _refusal(tmp_path, {**states["mambaad"], **change}, weights="random")


def test_missing_and_mis_shaped_tensors_are_refused(states, tmp_path):
    state = dict(states["mambaad"])
    del state["net_s.layers_up.3.blocks.0.finalconv11.bias"]
    assert "1 missing in the file (e.g. decoder.stages.3.lss_modules.0.fuse.bias)" in _refusal(tmp_path, state, weights="random")
    state = {**states["mambaad"], "mff_oce.conv1.weight": torch.zeros(128, 64, 1, 1)}
    assert "mff_oce.conv1.weight (128, 64, 1, 1) vs (128, 64, 3, 3)" in _refusal(tmp_path, state, weights="random")


def test_a_checkpoint_of_the_other_code_or_scan_is_named(states, tmp_path):
    message = _refusal(tmp_path, states["pyramid"], weights="random")
    assert "official Pyramid-Mamba code" in message and "--preset pyramid_mamba" in message
    assert "has 8 scan directions, the model 4: add --set num_directions=8" in _refusal(
        tmp_path, states["mambaad"], weights="random", num_directions=4
    )
    assert "--preset mambaad" in _refusal(tmp_path, states["mambaad"], "pyramid_mamba", weights="random", num_directions=8, scan_order="hilbert")
    assert "add --set scan_order=hilbert" in _refusal(tmp_path, states["mambaad"], weights="random", scan_order="sweep")


def test_the_encoder_comes_from_the_checkpoint_or_from_weights_never_both(states, tmp_path):
    assert "holds no encoder" in _refusal(tmp_path, states["mambaad"])
    full = with_encoder(states["mambaad"])
    assert "drop --weights" in _refusal(tmp_path, full, weights="random")
    assert "is not a resnet18" in _refusal(tmp_path, full, encoder="resnet18")
    with pytest.raises(ValueError, match="chosen with --weights"):
        ssmad.convert(tmp_path / "official.pth", "mambaad", encoder_weights="random")


def test_unreadable_files_are_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(OfficialCheckpointError, match="truncated or not a PyTorch file"):
        ssmad.convert(bad, "mambaad", weights="random")
    torch.save({"epoch": 3}, bad)
    with pytest.raises(OfficialCheckpointError, match="holds no state dict"):
        ssmad.convert(bad, "mambaad", weights="random")
    with pytest.raises(OfficialCheckpointError, match="no official checkpoint at"):
        ssmad.convert(tmp_path / "absent.pth", "mambaad", weights="random")


def test_the_command_line_refuses_in_one_line(states, tmp_path, capsys):
    path = tmp_path / "official.pth"
    torch.save(states["mambaad"], path)
    args = ["convert", str(path), "--preset", "mambaad", "--out", str(tmp_path / "run"), "--data", str(tmp_path)]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ssmad convert: error:") and "holds no encoder" in error and "\n" not in error
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_with_python_objects_is_not_unpickled(tmp_path):
    path = tmp_path / "ader.pth"
    torch.save({"net": {}, "scheduler": OfficialCheckpointError("stands for any object")}, path)
    with pytest.raises(OfficialCheckpointError, match=r"Python objects besides tensors \(e\.g\. a ssmad\.official\.state_dict\.OfficialCheckpointError\).*weights_only=False"):
        ssmad.convert(path, "mambaad", weights="random")

"""Checkpoint files: round trip, atomic writes, and clear errors for wrong or damaged files."""

import pytest
import torch

from ssmad.engine import checkpoint as checkpoint_module
from ssmad.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _payload(preset="pyramid_mamba", value=1.0):
    return {"preset": preset, "ssmad_version": "0", "trainable_state": {"w": torch.full((3,), value)}}


def test_round_trip_and_run_folder_lookup(tmp_path):
    save_checkpoint(_payload(value=2.0), tmp_path / "checkpoint.pt")
    for where in (tmp_path / "checkpoint.pt", tmp_path):
        loaded = load_checkpoint(where, expected_preset="pyramid_mamba")
        assert torch.equal(loaded["trainable_state"]["w"], torch.full((3,), 2.0))
        assert loaded["format"] == "ssmad-checkpoint"


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_payload(value=1.0), path)

    def crashing_save(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crashing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(_payload(value=9.0), path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["trainable_state"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_payload(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_wrong_files_are_clear_errors(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_checkpoint(text)
    other = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not an ssmad checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing")


def test_checkpoint_of_another_preset_is_a_clear_error(tmp_path):
    save_checkpoint(_payload(preset="mambaad"), tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="'mambaad' model, not 'pyramid_mamba'"):
        load_checkpoint(tmp_path, expected_preset="pyramid_mamba")

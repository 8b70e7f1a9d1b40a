"""Fault: a training image deleted or corrupted between runs, or before --resume: named, never a crash."""

import shutil

import pytest
from engine_tiny import make_tiny_data, tiny_cli_args

from ssmad.cli import main
from ssmad.engine.checkpoint import load_checkpoint


@pytest.fixture
def stopped_run(tmp_path):
    """Tiny data and a run stopped after one step (resumable)."""
    data = make_tiny_data(tmp_path / "data")
    run = tmp_path / "run"
    assert main([*tiny_cli_args(data, run), "--epochs", "2", "--max-steps", "1"]) == 0
    return data, run


def _resume_error(run, capsys) -> str:
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    return error


@pytest.mark.slow
def test_image_deleted_before_resume_is_named(stopped_run, capsys):
    data, run = stopped_run
    victim = data / "nut" / "train" / "good" / "003.png"
    victim.unlink()
    error = _resume_error(run, capsys)
    assert str(victim) in error and "is gone" in error and "restore" in error
    assert not load_checkpoint(run)["progress"]["finished"]  # the checkpoint is untouched


@pytest.mark.slow
def test_image_corrupted_before_resume_is_named(stopped_run, capsys):
    data, run = stopped_run
    victim = data / "wood" / "train" / "good" / "002.png"
    victim.write_bytes(victim.read_bytes()[:100])
    error = _resume_error(run, capsys)
    assert str(victim) in error and "changed" in error


@pytest.mark.slow
def test_image_corrupted_or_deleted_between_runs_is_named_and_left_out(stopped_run, tmp_path):
    data, _ = stopped_run
    corrupted = data / "wood" / "train" / "good" / "002.png"
    corrupted.write_bytes(corrupted.read_bytes()[:100])
    deleted = data / "nut" / "train" / "good" / "004.png"
    shutil.move(deleted, tmp_path / "elsewhere.png")
    run = tmp_path / "second"
    assert main([*tiny_cli_args(data, run), "--epochs", "1"]) == 0
    log = (run / "train.log").read_text()
    assert f"left out unusable training image {corrupted}" in log and "truncated" in log
    assert str(deleted) not in log  # a file that is simply not there is not part of the new run
    recorded = load_checkpoint(run)["data_files"]
    assert recorded["rejected"] == [str(corrupted)] and len(recorded["usable"]) == 10

"""Every setting that can be checked before training is checked before any work is done."""

import pytest
from engine_tiny import make_tiny_data, tiny_cli_args, tiny_config

from ssmad.cli import main
from ssmad.engine import preflight
from ssmad.engine.checkpoint import load_checkpoint
from ssmad.engine.trainer import Trainer, resume_config


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("data"))


def _refused(argv, capsys, run) -> str:
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert not (run / "checkpoint.pt").exists()
    assert not (run / "train.log").exists() or "epoch 1/" not in (run / "train.log").read_text()
    return error


@pytest.mark.parametrize(("flag", "value"), [("--val-fraction", "0"), ("--val-fraction", "1"),
                                             ("--target-fpr", "0"), ("--target-fpr", "1.5")])
def test_bad_fractions_are_refused_before_training(tiny_data, tmp_path, capsys, flag, value):
    run = tmp_path / "run"
    error = _refused([*tiny_cli_args(tiny_data, run), "--epochs", "1", flag, value], capsys, run)
    assert flag in error and "e.g." in error


def test_unwritable_out_folder_is_refused(tiny_data, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    run = blocker / "run"
    assert main([*tiny_cli_args(tiny_data, run), "--epochs", "1"]) == 2
    assert "--out" in capsys.readouterr().err


def test_disk_and_memory_caches_are_sized_before_training(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(preflight, "free_disk_bytes", lambda path: 1000)
    run = tmp_path / "disk"
    error = _refused([*tiny_cli_args(tiny_data, run), "--epochs", "1", "--cache", "disk"], capsys, run)
    assert "--cache disk" in error and "MB" in error
    monkeypatch.setattr(preflight, "available_memory_bytes", lambda: 1000)
    run = tmp_path / "memory"
    error = _refused([*tiny_cli_args(tiny_data, run), "--epochs", "1", "--cache", "memory"], capsys, run)
    assert "--cache memory" in error and "--cache disk" in error


@pytest.mark.slow
def test_a_failure_after_training_still_leaves_a_checkpoint(tiny_data, tmp_path, monkeypatch):
    run = tmp_path / "run"

    def broken_calibration(self, source):
        raise RuntimeError("calibration broke")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "calibrate", broken_calibration)
        with pytest.raises(RuntimeError, match="calibration broke"):
            Trainer(tiny_config(tiny_data, run, epochs=1)).fit()
    payload = load_checkpoint(run)
    assert not payload["progress"]["finished"] and payload["progress"]["epoch"] == 1
    assert "checkpoint written" in (run / "train.log").read_text()
    resumed = Trainer(resume_config(run), resume=True).fit()
    assert resumed.finished and load_checkpoint(run)["calibration"] is not None

"""Fault: the disk fills up (OSError ENOSPC) while a checkpoint or a report is written."""

import errno
import json

import pytest
from engine_tiny import make_tiny_data, tiny_cli_args

from ssmad.cli import main
from ssmad.engine import atomic_write
from ssmad.engine.checkpoint import load_checkpoint


def _disk_full_after(monkeypatch, writes: int) -> None:
    """Every fsync after the first ``writes`` ones fails as on a full disk."""
    real_fsync = atomic_write.os.fsync
    calls = []

    def fsync(descriptor):
        calls.append(descriptor)
        if len(calls) > writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(atomic_write.os, "fsync", fsync)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.mark.slow
def test_disk_full_at_a_checkpoint_keeps_the_previous_one(tiny_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _disk_full_after(patch, writes=2)  # train_config.json and epoch 1's checkpoint, then full
        code = main([*tiny_cli_args(tiny_data, run), "--epochs", "2", "--checkpoint-every", "1"])
    assert code == 2
    error = capsys.readouterr().err
    assert "checkpoint.pt" in error and "disk is full" in error and "previous checkpoint.pt is unchanged" in error
    assert "Traceback" not in error
    previous = load_checkpoint(run)
    assert previous["progress"]["epoch"] == 1 and not previous["progress"]["finished"]
    assert not list(run.glob(".*.tmp-*"))
    assert main(["train", "--resume", "--out", str(run), "--device", "cpu"]) == 0
    assert load_checkpoint(run)["progress"]["finished"]


def test_disk_full_at_a_report_keeps_the_previous_report(tiny_run_copy, capsys, monkeypatch):
    run = tiny_run_copy.run  # trained with --test: run/test holds the exact protocol's report
    report = run / "test" / "metrics.json"
    before = report.read_bytes()
    with monkeypatch.context() as patch:
        _disk_full_after(patch, writes=0)
        code = main(["test", str(run), "--device", "cpu", "--protocol", "ader", "--overlays", "0"])
    assert code == 2
    error = capsys.readouterr().err
    assert "metrics.json" in error and "disk is full" in error and "Traceback" not in error
    assert report.read_bytes() == before and json.loads(before)["protocol"] == "exact"
    assert not list((run / "test").glob(".*.tmp-*"))

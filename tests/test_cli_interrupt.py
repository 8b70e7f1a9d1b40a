"""``ssmad train`` stopped by SIGTERM (or by Ctrl-C in a background job) leaves a resumable checkpoint."""

import signal
import subprocess
import sys
import time

import pytest
from engine_tiny import make_tiny_data, tiny_cli_args

from ssmad.engine.checkpoint import load_checkpoint


@pytest.mark.slow
def test_sigterm_during_training_writes_a_checkpoint(tmp_path):
    data = make_tiny_data(tmp_path / "data")
    run = tmp_path / "run"
    log = run / "train.log"
    command = [sys.executable, "-m", "ssmad", *tiny_cli_args(data, run), "--epochs", "1000"]
    # SIGINT ignored, as for a job a non-interactive shell puts in the background.
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = time.monotonic() + 120
    while not (log.is_file() and "epoch 1/1000" in log.read_text()):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "training never finished its first epoch"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted: checkpoint written" in log.read_text()
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    assert not checkpoint["progress"]["finished"] and checkpoint["progress"]["global_step"] >= 1

"""Fault: SIGKILL of training while it writes a checkpoint (a hook pauses inside the write)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from engine_tiny import make_tiny_data, tiny_cli_args

from ssmad.cli import main
from ssmad.engine.checkpoint import load_checkpoint

# Runs `ssmad train`; the second checkpoint write stops half-way through its temporary file.
PAUSING_WRITE = """
import os, sys, time
from pathlib import Path
import ssmad.engine.checkpoint as checkpoint
real_write = checkpoint.atomic_write_bytes
calls = []

def pausing_write(path, data):
    calls.append(path)
    if len(calls) < 2:
        return real_write(path, data)
    path = Path(path)
    with open(path.with_name(f".{path.name}.tmp-{os.getpid()}"), "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
    Path(sys.argv[1]).write_text("writing")
    time.sleep(600)

checkpoint.atomic_write_bytes = pausing_write
from ssmad.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_write_keeps_the_previous_one(tmp_path, capsys):
    data = make_tiny_data(tmp_path / "data")
    run = tmp_path / "run"
    marker = tmp_path / "inside_write"
    args = [*tiny_cli_args(data, run), "--epochs", "3", "--checkpoint-every", "1"]
    process = subprocess.Popen([sys.executable, "-c", PAUSING_WRITE, str(marker), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the second checkpoint write never started"
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    leftovers = list(run.glob(".checkpoint.pt.tmp-*"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the half-written file
    previous = load_checkpoint(run)
    assert previous["progress"]["epoch"] == 1 and not previous["progress"]["finished"]
    assert main(["train", "--resume", "--out", str(run), "--device", "cpu"]) == 0
    final = load_checkpoint(run)
    assert final["progress"]["finished"] and final["progress"]["epoch"] == 3
    assert not list(run.glob(".checkpoint.pt.tmp-*"))
    assert "resumed" in (run / "train.log").read_text()

"""DDP: SIGTERM to ONE rank stops every rank at the same step with a checkpoint, without a hang."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_tiny import make_tiny_data, tiny_cli_args

from ssmad.engine.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_process(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank`` started under ``parent``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_all_ranks_with_a_checkpoint(tmp_path):
    data = make_tiny_data(tmp_path / "data")
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", "-m", "ssmad", *tiny_cli_args(data, run), "--epochs", "1000",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = run / "train.log"
    deadline = time.monotonic() + 180
    while not (log.is_file() and "epoch 1/1000" in log.read_text()):
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "training never finished its first epoch"
        time.sleep(0.2)
    worker = _rank_process(process.pid, 1)
    assert worker is not None
    os.kill(worker, signal.SIGTERM)
    try:
        process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError("the ranks hung after SIGTERM to rank 1") from None
    assert "interrupted: checkpoint written" in log.read_text()
    checkpoint = load_checkpoint(run)
    assert checkpoint["progress"]["world_size"] == 2 and not checkpoint["progress"]["finished"]
    assert len(checkpoint["rng"]) == 2

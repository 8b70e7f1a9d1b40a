"""DDP: ``torchrun --nproc_per_node=2 -m ssmad train`` (gloo, CPU) against one process.

Both runs use the same global batch of 4. Batch-norm statistics are per process in DDP (PyTorch's
SyncBatchNorm is GPU-only), so the single-process reference splits its batch the same way with
``--accumulate 2``; feature noise and drop-path are off because each process draws its own.
"""

import os
import socket
import subprocess
import sys

import torch
from engine_tiny import make_tiny_data, tiny_cli_args

from ssmad.cli import main
from ssmad.engine.checkpoint import load_checkpoint

NO_RANDOMNESS = ["--set", "noise_std=0", "--set", "drop_path_rate=0", "--epochs", "2"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_ddp_matches_one_process_at_the_same_global_batch(tmp_path):
    data = make_tiny_data(tmp_path / "data")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main([*tiny_cli_args(data, single), *NO_RANDOMNESS, "--accumulate", "2"]) == 0
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", "-m", "ssmad", *tiny_cli_args(data, ddp), *NO_RANDOMNESS,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    reference = load_checkpoint(single)
    distributed = load_checkpoint(ddp)
    assert distributed["progress"]["world_size"] == 2 and len(distributed["rng"]) == 2
    assert distributed["progress"]["global_step"] == reference["progress"]["global_step"] == 4
    for key, value in reference["trainable_state"].items():
        if value.is_floating_point() and "running" not in key:
            assert torch.allclose(value, distributed["trainable_state"][key], atol=1e-5, rtol=1e-4), key

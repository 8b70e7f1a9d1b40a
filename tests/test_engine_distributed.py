"""DDP: ``torchrun --nproc_per_node=2 -m ssmad train`` (gloo, CPU) against one process.

Both runs use the same global batch of 4. Batch-norm statistics are per process in DDP (PyTorch's
SyncBatchNorm is GPU-only), so the single-process reference splits its batch the same way with
``--accumulate 2``; feature noise and drop-path are off because each process draws its own.
One optimiser step is compared: its gradient (AdamW's first moment, 0.1 x gradient) must agree to
float32 rounding. Later steps are not compared element by element: Adam's first update is about
lr x sign(gradient), so rounding-level differences flip the update of near-zero gradients and
then grow, in any two runs that sum in a different order.
"""

import os
import re
import socket
import subprocess
import sys

import pytest
import torch
from engine_tiny import make_tiny_data, tiny_cli_args

from ssmad.cli import main
from ssmad.engine.checkpoint import load_checkpoint

ONE_STEP = ["--set", "noise_std=0", "--set", "drop_path_rate=0", "--epochs", "1", "--max-steps", "1"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(data, out, *extra: str, module: list[str]) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", *module, *tiny_cli_args(data, out), *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


# Rank 1 reads a clock four times as fast: on its own it would see its steps four times as slow and
# plan far fewer of them, leaving rank 0 waiting in an all-reduce that never comes.
FAST_CLOCK_ON_RANK_1 = """
import os, sys, time
from ssmad.cli import main
from ssmad.engine.trainer import Trainer

if os.environ["RANK"] == "1":
    init = Trainer.__init__
    Trainer.__init__ = lambda self, config, context=None, resume=False, clock=None: init(
        self, config, context, resume, lambda: 4.0 * time.monotonic())
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_at_the_same_global_batch(tmp_path):
    data = make_tiny_data(tmp_path / "data")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main([*tiny_cli_args(data, single), *ONE_STEP, "--accumulate", "2"]) == 0
    finished = _torchrun(data, ddp, *ONE_STEP, module=["-m", "ssmad"])
    assert finished.returncode == 0, finished.stderr[-3000:]
    reference = load_checkpoint(single)
    distributed = load_checkpoint(ddp)
    assert distributed["progress"]["world_size"] == 2 and len(distributed["rng"]) == 2
    assert distributed["progress"]["global_step"] == reference["progress"]["global_step"] == 1
    moments = zip(reference["optimizer"]["state"].values(), distributed["optimizer"]["state"].values())
    for index, (expected, actual) in enumerate(moments):
        scale = expected["exp_avg"].abs().max()
        assert torch.allclose(actual["exp_avg"], expected["exp_avg"], atol=1e-3 * float(scale) + 1e-7), index
    lr = reference["optimizer"]["param_groups"][0]["lr"]
    mismatched = total = 0
    for key, value in reference["trainable_state"].items():
        if value.is_floating_point() and "running" not in key:
            difference = (value - distributed["trainable_state"][key]).abs()
            assert difference.max() <= 2 * lr + 1e-6, key
            mismatched += int((difference > 1e-6).sum())
            total += value.numel()
    assert mismatched < 1e-3 * total


@pytest.mark.slow
def test_a_ddp_budget_run_follows_the_main_process_plan_on_every_process(tmp_path):
    data = make_tiny_data(tmp_path / "data")
    runner = tmp_path / "fast_clock_on_rank_1.py"
    runner.write_text(FAST_CLOCK_ON_RANK_1)
    run = tmp_path / "ddp_budget"
    finished = _torchrun(data, run, "--time-budget", "40s", module=[str(runner)])
    assert finished.returncode == 0, finished.stderr[-3000:]
    payload = load_checkpoint(run)
    budget, steps = payload["budget"], payload["progress"]["global_step"]
    assert payload["progress"]["world_size"] == 2
    assert budget["steps"] == budget["planned_steps"] == steps > 3  # more than the three timed steps
    assert payload["calibration"] is not None
    outcome = re.search(r"time budget 40s: (\d+) steps .* \((\d+) % of the budget\)", (run / "train.log").read_text())
    assert outcome and int(outcome[1]) == steps

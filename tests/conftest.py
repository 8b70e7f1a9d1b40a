"""Shared test fixtures: paths to the optional real data and weights beside the checkout, and one
tiny trained run shared by every test that only needs a finished run. Without a CUDA GPU, Triton
kernels run in Triton's interpreter on CPU tensors: TRITON_INTERPRET is set here, before anything
imports triton (``triton.jit`` reads it when it decorates a function).

The tiny run (``tiny_run``) is trained once per pytest session, by ``ssmad train ... --test`` on
two synthetic classes (see ``engine_tiny``). Tests use it read-only: one that changes the run
(recalibrates it, writes into its folder) takes ``tiny_run_copy``, a private copy. The run and its
data are checked unchanged when the session ends. Tests about training itself (resume, DDP,
interrupts, faults while training, the learning-rate schedule, the feature cache) train their own.

Marker ``slow``: tests that start other processes or train runs of their own, for tens of seconds
each on a 2-core CPU. ``python -m pytest -q -m "not slow"`` is the quick local run; CI (``.ci/run``)
and the README's test command run every test.
"""

import hashlib
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"
MVTEC_ROOT = SHARED / "data" / "mvtec_ad"
WEIGHTS_DIR = SHARED / "weights"


@pytest.fixture
def mvtec_root() -> Path:
    """The real MVTec AD folder (bottle only), or skip when it is absent."""
    if not (MVTEC_ROOT / "bottle").is_dir():
        pytest.skip(f"real MVTec AD data not found at {MVTEC_ROOT}")
    return MVTEC_ROOT


@pytest.fixture
def weights_dir() -> Path:
    """The folder of pretrained encoder weights, or skip when it is absent."""
    if not WEIGHTS_DIR.is_dir():
        pytest.skip(f"pretrained weights not found at {WEIGHTS_DIR}")
    return WEIGHTS_DIR


class TinyRun(NamedTuple):
    """A finished tiny run and the synthetic data it was trained on."""

    data: Path  # wood and nut, 6 training and 6 test images each, 64 x 64 (engine_tiny.make_tiny_data)
    run: Path  # the run folder: checkpoint.pt, train.log, test/ (exact protocol, from train --test)


def _file_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One epoch of the tiny two-class Pyramid-Mamba, trained by the command line with ``--test``.

    Read-only: the session fails at its end if a test changed the run or its data.
    """
    from engine_tiny import make_tiny_data, tiny_cli_args

    from ssmad.cli import main

    root = tmp_path_factory.mktemp("tiny_run")
    data = make_tiny_data(root / "data")
    run = root / "run"
    assert main([*tiny_cli_args(data, run), "--epochs", "1", "--test"]) == 0
    before = _file_digests(root)
    yield TinyRun(data, run)
    after = _file_digests(root)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"a test changed the shared tiny run ({', '.join(changed)}): take tiny_run_copy instead"


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> TinyRun:
    """A private copy of the tiny run's folder, for a test that changes it (the data stay shared)."""
    run = tmp_path / "tiny_run"
    shutil.copytree(tiny_run.run, run)
    return TinyRun(tiny_run.data, run)

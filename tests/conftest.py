"""Shared test fixtures: paths to the optional real data and weights beside the checkout. Without
a CUDA GPU, Triton kernels run in Triton's interpreter on CPU tensors: TRITON_INTERPRET is set
here, before anything imports triton (``triton.jit`` reads it when it decorates a function)."""

import os
from pathlib import Path

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

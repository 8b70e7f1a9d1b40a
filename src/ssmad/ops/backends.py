"""Which scan backend runs where: one choice for the plain selective scan and the routed scan.

Backends: "numba" (the CPU kernel), "triton" (the GPU kernel: CUDA tensors, or CPU tensors under
the Triton interpreter, TRITON_INTERPRET=1), "torch" (plain PyTorch, any device), "mamba_ssm"
(mamba_ssm's compiled CUDA kernel; the plain scan only, it has no routes) and "reference" (the
slow sequential loop the tests hold the others against). "auto" (default; also read from the
environment variable SSMAD_SCAN_BACKEND) picks numba for CPU tensors other than float64, on
CUDA mamba_ssm's kernel for the plain scan when it is installed, else triton when it is
installed, and torch everywhere else (MPS, float64, no numba, no triton).

"cuda", the name of "mamba_ssm" in ssmad 0.1, still means it for one more release, with a
DeprecationWarning (``DEPRECATED_BACKENDS``).
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch
from torch import Tensor

BACKENDS = ("auto", "numba", "triton", "torch", "mamba_ssm", "reference")
DEPRECATED_BACKENDS = {"cuda": "mamba_ssm"}  # old name (ssmad 0.1) -> name; removed in the next release
BACKEND_ENV = "SSMAD_SCAN_BACKEND"
INTERPRET_ENV = "TRITON_INTERPRET"


def resolve_backend(backend: str | None, u: Tensor, routed: bool = False) -> str:
    """The backend that ``backend`` (None: $SSMAD_SCAN_BACKEND, else auto) means for tensors like
    ``u``, for the routed scan when ``routed``; ValueError for an unknown one or one that cannot
    run them here, with the fix."""
    source = "backend argument"
    if backend is None:
        backend, source = os.environ.get(BACKEND_ENV) or "auto", f"environment variable {BACKEND_ENV}"
    name = backend.lower()
    if name in DEPRECATED_BACKENDS:
        name = DEPRECATED_BACKENDS[name]
        warnings.warn(
            f"selective-scan backend {backend!r} ({source}) is now called {name!r}; the old name will be removed in the next release",
            DeprecationWarning,
            stacklevel=3,
        )
    if name not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r} ({source}); choose one of {', '.join(BACKENDS)}")
    device = u.device.type
    if name == "auto":
        if device == "cpu" and u.dtype != torch.float64 and numba_available():
            return "numba"
        if device == "cuda" and not routed and mamba_ssm_available():
            return "mamba_ssm"
        if device == "cuda" and triton_available():
            return "triton"
        return "torch"
    if name == "numba":
        if device != "cpu":
            raise ValueError(f"selective-scan backend 'numba' runs on CPU tensors, got {device}; use 'auto' or 'torch'")
        if not numba_available():
            raise ValueError("selective-scan backend 'numba' needs the numba package: pip install numba")
    if name == "triton":
        if not triton_available():
            raise ValueError("selective-scan backend 'triton' needs the triton package: pip install triton")
        if device != "cuda" and not interpreting():
            raise ValueError(
                f"selective-scan backend 'triton' runs on CUDA tensors, got {device}; "
                f"set {INTERPRET_ENV}=1 to run it on CPU tensors (slow, for tests), or use 'auto'"
            )
    if name == "mamba_ssm":
        if routed:
            raise ValueError(
                f"mamba_ssm's kernel ('mamba_ssm', {source}) has no routed scan, which SS2D runs; "
                "use 'auto', 'triton' or 'torch' for models"
            )
        if device != "cuda":
            raise ValueError(f"selective-scan backend 'mamba_ssm' runs on CUDA tensors, got {device}; use 'torch' or 'auto'")
        if not mamba_ssm_available():
            raise ValueError(
                "selective-scan backend 'mamba_ssm' needs mamba_ssm's compiled kernel "
                "(pip install mamba-ssm, built for your CUDA); use 'triton', 'torch' or 'auto'"
            )
    return name


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on ``device`` in this installation (besides "auto"), fastest first."""
    device = torch.device(device)
    names = ["torch", "reference"]
    if device.type == "cpu" and numba_available():
        names.insert(0, "numba")
    if triton_available() and (device.type == "cuda" or interpreting()):
        names.insert(0, "triton")
    if device.type == "cuda" and mamba_ssm_available():
        names.insert(0, "mamba_ssm")
    return names


def interpreting() -> bool:
    """Whether Triton kernels run in its interpreter (on CPU tensors): TRITON_INTERPRET=1."""
    return os.environ.get(INTERPRET_ENV, "0") not in ("", "0")


def numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def mamba_ssm_available() -> bool:
    """Whether mamba_ssm's compiled selective-scan kernel imports."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # an ImportError, or a broken CUDA build failing at import
        return False
    return True

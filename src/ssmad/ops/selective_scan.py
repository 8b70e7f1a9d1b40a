"""The selective scan: one entry point, several backends (numba CPU kernel, PyTorch, mamba_ssm CUDA)."""

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from .reference import selective_scan_ref
from .scan_torch import scan_core_torch

BACKENDS = ("auto", "numba", "torch", "cuda", "reference")
BACKEND_ENV = "SSMAD_SCAN_BACKEND"


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with the semantics of ``mamba_ssm``'s ``selective_scan_fn``.

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t,  y_t = <C_t, h_t> + D * u_t,  out = y * silu(z),
    dt = softplus(delta + delta_bias) when ``delta_softplus`` else delta + delta_bias.

    Shapes: u, delta, z (batch, dim, L); A (dim, N); B, C (batch, N, L) or (batch, G, N, L) with
    G dividing dim (group g serves dim/G consecutive channels); D, delta_bias (dim,).
    Returns out (batch, dim, L) in u's dtype (state and sums in float32; in float64 for float64
    inputs except on "numba", which is float32 only), plus the final state (batch, dim, N) when
    ``return_last_state`` (not differentiable).

    ``backend``: "auto" (default; also read from the environment variable SSMAD_SCAN_BACKEND)
    picks "cuda" (mamba_ssm's kernel) for CUDA tensors when mamba_ssm is installed, "numba" for
    CPU tensors other than float64 when numba is installed, else "torch" (any device; float64 stays
    float64 there). "reference" is the slow
    sequential loop.
    """
    name = resolve_backend(backend, u)
    if name == "reference":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if name == "cuda":
        from .scan_cuda import selective_scan_cuda

        return selective_scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if name == "numba":
        out, last = _scan_numba(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    else:
        out, last = _scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (out, last) if return_last_state else out


def _grouped(B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """B and C as (batch, G, N, L) with one grouping for both (an ungrouped one is broadcast)."""
    B = B.unsqueeze(1) if B.dim() == 3 else B
    C = C.unsqueeze(1) if C.dim() == 3 else C
    groups = max(B.shape[1], C.shape[1])
    return B.expand(-1, groups, -1, -1), C.expand(-1, groups, -1, -1)


def _scan_numba(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> tuple[Tensor, Tensor]:
    """The numba kernel computes bias, softplus and skip D itself; only the gate z is applied here."""
    from .scan_numba import selective_scan_numba

    B, C = _grouped(B, C)
    y, last = selective_scan_numba(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if z is not None:
        y = y * F.silu(z.to(torch.float32))
    return y.to(u.dtype), last


def _scan_torch(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> tuple[Tensor, Tensor]:
    """The block scan of ``scan_torch`` with the elementwise parts (bias, softplus, skip D, gate z) in
    autograd around it; float64 stays float64, anything else runs in float32."""
    dtype = u.dtype
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(compute) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    B, C = _grouped(B, C)
    y, last = scan_core_torch(u, delta, A, B, C)
    if D is not None:
        y = torch.addcmul(y, u, D.to(compute)[:, None])
    if z is not None:
        y = y * F.silu(z.to(compute))
    return y.to(dtype), last


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on ``device`` in this installation (besides "auto")."""
    device = torch.device(device)
    names = ["torch", "reference"]
    if device.type == "cpu" and _numba_available():
        names.insert(0, "numba")
    if device.type == "cuda" and _cuda_kernel_available():
        names.insert(0, "cuda")
    return names


def resolve_backend(backend: str | None, u: Tensor) -> str:
    """The backend that ``backend`` (None: $SSMAD_SCAN_BACKEND, else auto) means for tensors like
    ``u``; ValueError for an unknown one or one that cannot run them here."""
    source = "backend argument"
    if backend is None:
        backend, source = os.environ.get(BACKEND_ENV) or "auto", f"environment variable {BACKEND_ENV}"
    name = backend.lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r} ({source}); choose one of {', '.join(BACKENDS)}")
    device = u.device.type
    if name == "auto":
        if device == "cuda" and _cuda_kernel_available():
            return "cuda"
        if device == "cpu" and u.dtype != torch.float64 and _numba_available():
            return "numba"
        return "torch"
    if name == "numba":
        if device != "cpu":
            raise ValueError(f"selective-scan backend 'numba' runs on CPU tensors, got {device}; use 'torch' or 'auto'")
        if not _numba_available():
            raise ValueError("selective-scan backend 'numba' needs the numba package: pip install numba")
    if name == "cuda":
        if device != "cuda":
            raise ValueError(f"selective-scan backend 'cuda' runs on CUDA tensors, got {device}; use 'torch' or 'auto'")
        if not _cuda_kernel_available():
            raise ValueError(
                "selective-scan backend 'cuda' needs mamba_ssm's compiled kernel "
                "(pip install mamba-ssm, built for your CUDA); use 'torch' or 'auto'"
            )
    return name


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _cuda_kernel_available() -> bool:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # an ImportError, or a broken CUDA build failing at import
        return False
    return True

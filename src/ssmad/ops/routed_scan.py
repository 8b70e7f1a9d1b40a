"""The scan core of a 2-D layer over :class:`~ssmad.ops.routes.Routes`: every direction and
pyramid level in one call on the map in raster layout, on every device (numba on CPU, Triton on
CUDA, plain PyTorch elsewhere and while exporting; see ``ssmad.ops.backends``)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .backends import resolve_backend
from .reference import routed_scan_ref
from .routes import Routes

ROUTED_BACKENDS = ("numba", "triton", "torch", "reference")

RoutedKernel = Callable[..., tuple[Tensor, Tensor]]


def routed_scan_backend(u: Tensor, backend: str | None = None) -> str:
    """The backend :func:`routed_selective_scan` uses for ``u``: "torch" while ``torch.onnx.export``
    traces the model (any device), else ``backend`` as ``ssmad.ops.backends`` resolves it."""
    if torch.onnx.is_in_onnx_export():
        return "torch"
    return resolve_backend(backend, u, routed=True)


def routed_kernel(name: str) -> RoutedKernel:
    """The routed-scan function of backend ``name`` ("numba", "triton" or "torch"); all take
    ``(u, dt, A, B, C, routes, D, delta_bias, softplus, sum_groups)`` and return ``(y, last)``
    (see ``ssmad.ops.scan_numba.routed_scan_numba``)."""
    if name == "numba":
        from .scan_numba import routed_scan_numba

        return routed_scan_numba
    if name == "triton":
        from .scan_triton import routed_scan_triton

        return routed_scan_triton
    from .scan_torch import routed_scan_torch

    return routed_scan_torch


def routed_selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    delta_bias: Tensor,
    routes: Routes,
    backend: str | None = None,
) -> Tensor:
    """Sum over G groups of their routed scans of u, plus the skip term: (batch, dim, L).

    dt = softplus(delta + delta_bias); along route r of group g,
    h_t = exp(dt_t A_g) h_{t-1} + dt_t B_t u_t, y_t = <C_t, h_t>, read and written at the route's
    raster positions; out = sum_g sum_r weight_gr (y_gr + D_g u), the skip term of every route
    included (for pyramid routes a group's weights sum to 1, so it adds up to D_g u).

    Shapes: u (batch, dim, L); delta (batch, G, dim, L); A (G, dim, N); B, C (batch, G, N, L);
    D, delta_bias (G, dim); routes (G, R, L), each route a permutation of 0..L-1. Returns float32
    (float64 on "torch" and "reference" for float64 u).
    """
    name = routed_scan_backend(u, backend)
    if name == "reference":
        compute = torch.promote_types(u.dtype, torch.float32)
        u, delta, A, B, C = (t.to(compute) for t in (u, delta, A, B, C))
        dt = F.softplus(delta + delta_bias.to(compute)[..., None])
        y = routed_scan_ref(u.unsqueeze(1), dt, A, B, C, routes).sum(1)
        skip = (D.to(compute) * routes.weight.to(compute).sum(1, keepdim=True)).sum(0)  # (dim,)
        return torch.addcmul(y, u, skip[:, None])
    y, _ = routed_kernel(name)(u.unsqueeze(1), delta, A, B, C, routes, D, delta_bias, softplus=True, sum_groups=True)
    return y[:, 0]

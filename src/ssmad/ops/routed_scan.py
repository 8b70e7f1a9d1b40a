"""The scan core of a 2-D layer over :class:`~ssmad.ops.routes.Routes`: every direction and
pyramid level in one call on the map in raster layout (CPU: the numba kernel; while exporting to
ONNX: the block loop of ``ssmad.ops.scan_loop``)."""

import torch
import torch.nn.functional as F
from torch import Tensor

from .reference import routed_scan_ref
from .scan_loop import routed_scan_loop
from .routes import Routes
from .selective_scan import resolve_backend

ROUTED_BACKENDS = ("numba", "reference", "loop")


def routed_scan_backend(u: Tensor, backend: str | None = None) -> str | None:
    """The backend :func:`routed_selective_scan` would use for ``u``: "loop" when asked for or
    while ``torch.onnx.export`` traces the model (any device), else the selective scan's choice
    (see ``ssmad.ops.selective_scan``), or None when that backend has no routed kernel."""
    if backend == "loop" or torch.onnx.is_in_onnx_export():
        return "loop"
    name = resolve_backend(backend, u)
    return name if name in ROUTED_BACKENDS else None


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
    D, delta_bias (G, dim); routes (G, R, L). Runs in float32 ("numba") or u's float dtype
    ("reference", the slow loop the tests hold the kernel against); "loop" is float32 and
    inference only (``ssmad.ops.scan_loop``).
    """
    name = routed_scan_backend(u, backend)
    if name is None:
        raise ValueError(
            f"no routed scan for {u.device.type} tensors with backend {backend or 'auto'}; "
            f"use one of {', '.join(ROUTED_BACKENDS)} on CPU"
        )
    if name == "numba":
        from .scan_numba import routed_scan_numba

        y, _ = routed_scan_numba(u.unsqueeze(1), delta, A, B, C, routes, D, delta_bias, softplus=True, sum_groups=True)
        return y[:, 0]
    if name == "loop":
        return routed_scan_loop(u, delta, A, B, C, D, delta_bias, routes)
    compute = torch.promote_types(u.dtype, torch.float32)
    u, delta, A, B, C = (t.to(compute) for t in (u, delta, A, B, C))
    dt = F.softplus(delta + delta_bias.to(compute)[..., None])
    y = routed_scan_ref(u.unsqueeze(1), dt, A, B, C, routes).sum(1)
    skip = (D.to(compute) * routes.weight.to(compute).sum(1, keepdim=True)).sum(0)  # (dim,)
    return torch.addcmul(y, u, skip[:, None])

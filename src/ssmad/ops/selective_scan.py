"""The selective scan: one entry point, several backends (numba CPU kernel, Triton, PyTorch,
mamba_ssm's CUDA kernel; see ``ssmad.ops.backends``). All but mamba_ssm's are the routed scan's kernels
with one identity route per group."""

import torch.nn.functional as F
from torch import Tensor

from .backends import resolve_backend
from .reference import selective_scan_ref
from .routed_scan import routed_kernel
from .routes import identity_routes


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
    picks "numba" for CPU tensors other than float64, "mamba_ssm" (its CUDA kernel) for CUDA tensors
    when mamba_ssm is installed, else "triton" when triton is, else "torch" (any device; float64
    stays float64 there). "reference" is the slow sequential loop. See ``ssmad.ops.backends``.
    """
    name = resolve_backend(backend, u)
    if name == "reference":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if name == "mamba_ssm":
        from .scan_mamba_ssm import selective_scan_mamba_ssm

        return selective_scan_mamba_ssm(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    out, last = _scan_routed(name, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (out, last) if return_last_state else out


def _grouped(B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """B and C as (batch, G, N, L) with one grouping for both (an ungrouped one is broadcast)."""
    B = B.unsqueeze(1) if B.dim() == 3 else B
    C = C.unsqueeze(1) if C.dim() == 3 else C
    groups = max(B.shape[1], C.shape[1])
    return B.expand(-1, groups, -1, -1), C.expand(-1, groups, -1, -1)


def _scan_routed(
    name: str,
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
    """The routed scan of backend ``name`` ("numba", "triton", "torch") with one identity route per
    group of B and C; the kernels compute bias, softplus and skip D, the gate z is applied here.
    float64 stays float64 on "torch"."""
    batch, dim, length = u.shape
    B, C = _grouped(B, C)
    groups, state = B.shape[1], A.shape[1]
    per_group = dim // groups
    packed = False
    if name == "numba":
        from .scan_numba import packs_groups

        packed = packs_groups(u, delta, per_group)
    if packed:  # read in place, the groups side by side
        u_g, delta_g = u.unsqueeze(1), delta.unsqueeze(1)
    else:
        u_g, delta_g = u.reshape(batch, groups, per_group, length), delta.reshape(batch, groups, per_group, length)

    def per_channel(x: Tensor | None) -> Tensor | None:  # (dim,) -> (G, dim/G)
        return None if x is None else x.reshape(groups, per_group)

    y, last = routed_kernel(name)(
        u_g, delta_g, A.reshape(groups, per_group, state), B, C, identity_routes(groups, length),
        per_channel(D), per_channel(delta_bias), delta_softplus,
    )
    y = y.reshape(batch, dim, length)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(u.dtype), last.reshape(batch, dim, state)

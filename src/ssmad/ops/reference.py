"""The sequential, obviously-correct selective scan, kept beside the fast backends to test them."""

import torch
import torch.nn.functional as F
from torch import Tensor


def selective_scan_ref(
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
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan, one time step after the other, differentiated by autograd.

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t,  y_t = <C_t, h_t> + D * u_t,  out = y * silu(z),
    with dt = softplus(delta + delta_bias) when ``delta_softplus`` else delta + delta_bias.

    Shapes: u, delta, z (batch, dim, L); A (dim, N); B, C (batch, N, L) or (batch, G, N, L) with
    G dividing dim (group g serves dim/G consecutive channels); D, delta_bias (dim,).
    Returns out (batch, dim, L) in u's dtype, and the final state (batch, dim, N) in float32
    (float64 for float64 inputs) when ``return_last_state``.

    Per-step tensors come from ``unbind`` and the outputs are stacked, so the backward stays
    linear in L (slicing one step at a time would allocate a full-size gradient per step).
    """
    dtype = u.dtype
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(compute) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, _ = u.shape
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    B = B.repeat_interleave(dim // B.shape[1], dim=1)  # (batch, dim, N, L)
    C = C.repeat_interleave(dim // C.shape[1], dim=1)  # (batch, dim, N, L)
    decay = torch.exp(delta.unsqueeze(-1) * A[:, None, :])  # (batch, dim, L, N)
    drive = (delta * u).unsqueeze(-1) * B.transpose(2, 3)  # (batch, dim, L, N)
    state = u.new_zeros(batch, dim, A.shape[1])  # (batch, dim, N)
    outputs = []
    for decay_t, drive_t, c_t in zip(decay.unbind(2), drive.unbind(2), C.unbind(3)):
        state = decay_t * state + drive_t
        outputs.append((state * c_t).sum(-1))
    y = torch.stack(outputs, dim=-1)  # (batch, dim, L)
    if D is not None:
        y = y + u * D.to(compute)[:, None]
    if z is not None:
        y = y * F.silu(z.to(compute))
    out = y.to(dtype)
    return (out, state) if return_last_state else out


def routed_scan_ref(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, routes) -> Tensor:
    """The routed scan (see ``ssmad.ops.scan_numba.routed_scan_numba``), one route and one time
    step after the other, differentiated by autograd.

    u (batch, 1 or G, dim, L); dt (batch, G, dim, L); A (G, dim, N); B, C (batch, G, N, L);
    routes (G, R, L). Returns y (batch, G, dim, L), each group's weighted sum of its routes.
    """
    groups, num_routes, _ = routes.shape
    u = u.expand(-1, groups, -1, -1)
    outputs = []
    for g in range(groups):
        y_g = torch.zeros_like(dt[:, g])  # (batch, dim, L)
        for r in range(num_routes):
            order = routes.index[g, r]
            state = dt.new_zeros(dt.shape[0], dt.shape[2], A.shape[-1])  # (batch, dim, N)
            steps = []
            for t, pos in enumerate(order.tolist()):
                if routes.starts[g, r, t]:
                    state = torch.zeros_like(state)
                dt_t = dt[:, g, :, pos, None]  # (batch, dim, 1)
                state = torch.exp(dt_t * A[g]) * state + dt_t * u[:, g, :, pos, None] * B[:, g, None, :, pos]
                steps.append((state * C[:, g, None, :, pos]).sum(-1))
            y_route = torch.stack(steps, dim=-1)  # (batch, dim, L) in route order
            y_g = y_g.index_add(2, order, routes.weight[g, r].to(y_route.dtype) * y_route)
        outputs.append(y_g)
    return torch.stack(outputs, dim=1)

"""The selective scan through mamba_ssm's compiled CUDA kernel, backend "mamba_ssm" (used only when
mamba_ssm is installed)."""

from torch import Tensor


def selective_scan_mamba_ssm(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
) -> Tensor | tuple[Tensor, Tensor]:
    """``mamba_ssm``'s ``selective_scan_fn`` on CUDA tensors; same arguments and shapes as ``selective_scan``."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
    z = z.contiguous() if z is not None else None
    return selective_scan_fn(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus=delta_softplus, return_last_state=return_last_state
    )

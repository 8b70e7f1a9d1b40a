"""ssmad.ops: the numerical kernels. Selective scan (numba CPU kernel, PyTorch, mamba_ssm CUDA,
sequential reference), orderings of a 2-D grid, and the directional gather/merge helpers."""

from .directions import direction_indices, gather_directions, merge_directions
from .reference import selective_scan_ref
from .scan_orders import SCAN_ORDERS, scan_order
from .selective_scan import BACKENDS, available_backends, selective_scan

__all__ = [
    "BACKENDS",
    "SCAN_ORDERS",
    "available_backends",
    "direction_indices",
    "gather_directions",
    "merge_directions",
    "scan_order",
    "selective_scan",
    "selective_scan_ref",
]

"""ssmad.ops: the numerical kernels. Selective scan (numba CPU kernel, Triton GPU kernel, PyTorch,
mamba_ssm CUDA, sequential reference), the routed scan of 2-D layers (directions and pyramid levels
in one call, on every device), orderings of a 2-D grid, and the directional gather/merge helpers."""

from .directions import direction_indices, gather_directions, merge_directions
from .reference import routed_scan_ref, selective_scan_ref
from .backends import BACKENDS, available_backends, resolve_backend
from .routed_scan import ROUTED_BACKENDS, routed_scan_backend, routed_selective_scan
from .routes import PYRAMID_MERGES, Routes, identity_routes, level_weights, pyramid_routes, split_segments
from .scan_orders import SCAN_ORDERS, scan_order
from .selective_scan import selective_scan

__all__ = [
    "BACKENDS",
    "PYRAMID_MERGES",
    "ROUTED_BACKENDS",
    "Routes",
    "SCAN_ORDERS",
    "available_backends",
    "direction_indices",
    "gather_directions",
    "identity_routes",
    "level_weights",
    "merge_directions",
    "pyramid_routes",
    "resolve_backend",
    "routed_scan_backend",
    "routed_scan_ref",
    "routed_selective_scan",
    "scan_order",
    "selective_scan",
    "selective_scan_ref",
    "split_segments",
]

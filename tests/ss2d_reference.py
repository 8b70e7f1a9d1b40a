"""The slow, obviously-correct SS2D scan that the routed scan is held to: one direction at a time
from the maps' definitions (transposes and rotations), one sub-region at a time, the levels
added up by their weights. x (B, D, H, W) -> (B, D, H, W)."""

import torch

from ssmad.modules.ss2d import SS2D
from ssmad.ops import level_weights, scan_order, selective_scan_ref


def crops(size: int, parts: int) -> list[tuple[int, int]]:
    """(start, stop) of each near-equal segment of a side, longer ones first, written out plainly."""
    parts = min(parts, size)
    bounds = [round(i * size / parts) for i in range(parts + 1)]
    lengths = sorted((bounds[i + 1] - bounds[i] for i in range(parts)), reverse=True)
    starts = [sum(lengths[:i]) for i in range(parts)]
    return [(s, s + n) for s, n in zip(starts, lengths)]


def directions_reference(ss2d: SS2D, x: torch.Tensor) -> torch.Tensor:
    """The K-direction scan of whole maps, summed over directions, one direction at a time."""
    batch, d_inner, height, width = x.shape
    rot = torch.rot90(x, 1, dims=(2, 3))
    maps = [x, x.transpose(2, 3), rot, rot.transpose(2, 3)][: ss2d.num_directions // 2]
    undo = [
        lambda m: m,
        lambda m: m.transpose(2, 3),
        lambda m: torch.rot90(m, -1, dims=(2, 3)),
        lambda m: torch.rot90(m.transpose(2, 3), -1, dims=(2, 3)),
    ]
    out = torch.zeros_like(x)
    for k in range(ss2d.num_directions):
        m = maps[k // 2]
        h, w = m.shape[-2:]
        order = scan_order(ss2d.scan_order, h, w)
        if k % 2:
            order = order.flip(0)
        seq = m.reshape(batch, d_inner, h * w)[:, :, order]  # (B, D, L) in visiting order
        proj = torch.einsum("bdl,cd->bcl", seq, ss2d.x_proj_weight[k].to(x.dtype))
        dt, b, c = torch.split(proj, [ss2d.dt_rank, ss2d.d_state, ss2d.d_state], dim=1)
        dt = torch.einsum("brl,dr->bdl", dt, ss2d.dt_projs_weight[k].to(x.dtype))
        channels = slice(k * d_inner, (k + 1) * d_inner)
        y = selective_scan_ref(
            seq, dt, -torch.exp(ss2d.A_logs[channels].to(x.dtype)), b, c, ss2d.Ds[channels].to(x.dtype),
            delta_bias=ss2d.dt_projs_bias[k].to(x.dtype), delta_softplus=True,
        )
        on_map = torch.zeros_like(y).index_copy(2, order, y)
        out = out + undo[k // 2](on_map.view(batch, d_inner, h, w))
    return out


def regions_reference(ss2d: SS2D, x: torch.Tensor, parts: int) -> torch.Tensor:
    """Each of the ``parts`` x ``parts`` sub-regions scanned on its own, in a Python loop."""
    rows = []
    for h0, h1 in crops(x.shape[2], parts):
        rows.append(torch.cat([directions_reference(ss2d, x[:, :, h0:h1, w0:w1]) for w0, w1 in crops(x.shape[3], parts)], 3))
    return torch.cat(rows, 2)


def pyramid_reference(ss2d: SS2D, x: torch.Tensor) -> torch.Tensor:
    """Levels 0..P of ``regions_reference`` (level p: 2^p x 2^p sub-regions), weighted by
    ``level_weights`` of the layer's merge."""
    weights = level_weights(ss2d.pyramid_levels, ss2d.pyramid_merge)
    return sum(w * regions_reference(ss2d, x, 2**p) for p, w in enumerate(weights))

"""The ONNX function ``ssmad::RoutedScan``: ``ssmad.ops.scan_torch``'s exported node in standard
operators, a model-local function of the exported file (onnxruntime inlines it; ssmad's OpenVINO
extension replaces the node by its fused operator).

Inputs, channels last: u (b, L, D); delta (b, G, L, D); A (G, D, N); B, C (b, G, L, N); Dskip,
bias (G, D); index (G, R, L) int64; keep (G, R, L) float, 0 where a route restarts; weight (G, R).
Output y (b, L, D).

1. dt = softplus(delta + bias); every per-position tensor gets a zero row at position L.
2. Gathered in route order, time-major, in NB blocks of T steps: (NB, T, G, R, b, D or N); the
   route orders are padded to whole blocks with position L (dt = 0: the state passes unchanged).
   Everything computed from index, keep and weight is constant-folded by the runtimes.
3. A ``Scan`` over the blocks carries the state h (G, R, b, N, D); its body (:func:`block_body`)
   runs the block's T steps one by one and writes their outputs y_t = C_t h_t out.
4. Back to raster order through the inverse orders, weighted sum over (G, R), plus u sum_g Dskip_g.

The body is the fastest of the formulations measured against each other with
``benchmarks/bench_scan_onnx.py`` (all within 1e-6 of PyTorch; table in docs/export.md). The
state laid out (N, D) makes every broadcast's inner span D channels long: the previous (D, N)
layout, with spans of N = 16, took 1.4-2.1x the time. Decay and drive per step from the step's
slices: computing them for the whole block, then splitting it, took 1.03-1.36x. Blocks of 8 steps:
4 tie, 16 and 32 lose at batch 8. Reading y_t by one MatMul beat Mul + ReduceSum (2026-12-05); a
``Loop`` instead of the ``Scan`` and onnxruntime's optimisation levels changed nothing.
"""

from __future__ import annotations

from ssmad.export.requirements import require
from ssmad.ops.scan_torch import SCAN_DOMAIN, SCAN_OP

INPUTS = ("u", "delta", "A", "B", "C", "Dskip", "bias", "index", "keep", "weight")
SCANNED = ("dt", "u", "B", "C", "keep")  # inputs cut into blocks along their first axis
BLOCK = 8  # steps per block


class _Nodes:
    """A list of NodeProtos with a short way to append one and name its output."""

    def __init__(self, helper, tensor_proto) -> None:
        self.helper, self.tensor_proto, self.nodes = helper, tensor_proto, []

    def __call__(self, kind: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(self.helper.make_node(kind, inputs, [output], **attrs))
        return output

    def ints(self, name: str, values: list[int]) -> str:
        tensor = self.helper.make_tensor(name, self.tensor_proto.INT64, [len(values)], values)
        return self("Constant", [], name, value=tensor)

    def scalar(self, name: str, value: float | int, dtype) -> str:
        return self("Constant", [], name, value=self.helper.make_tensor(name, dtype, [], [value]))


def block_body(helper, tensor_proto, block: int):
    """The Scan's body: states h (1, G, R, b, N, D) and A (G, 1, 1, N, D), then one block of
    dt, u (T, G, R, b, D), B, C (T, G, R, b, N), keep (T, G, R, 1, 1, 1) -> h, A, y (T, G, R, b, D).

    The state is laid out (N, D) so that every broadcast's inner span is D channels long. A route
    restart (keep 0) takes dt = inf there, so that decay = exp(dt A) = 0 (A < 0) without a pass over
    the state. Per step: decay and drive from the step's own (.., 1, D) and (.., N, 1) slices, then
    h_t = decay_t h_{t-1} + drive_t and y_t = C_t h_t (one MatMul over N)."""
    op = _Nodes(helper, tensor_proto)
    last, before_last = op.ints("last_axis", [-1]), op.ints("before_last_axis", [-2])
    dt, u, B, C, keep = (f"{name}_i" for name in SCANNED)
    restart = op("Not", [op("Cast", [keep], "kept", to=tensor_proto.BOOL)], "restart")
    infinity = op.scalar("infinity", float("inf"), tensor_proto.FLOAT)
    dt_decay = op("Where", [restart, infinity, op("Unsqueeze", [dt, before_last], "dt_e")], "dt_decay")  # (T, G, R, b, 1, D)
    dtu = op("Unsqueeze", [op("Mul", [dt, u], "dtu_raw"), before_last], "dtu")  # (T, G, R, b, 1, D)
    sources = {"dt_decay": dt_decay, "dtu": dtu, "B_col": op("Unsqueeze", [B, last], "B_e"), "C_row": op("Unsqueeze", [C, before_last], "C_e")}
    steps = {name: [f"{name}_{t}" for t in range(block)] for name in sources}
    ones = op.ints("ones", [1] * block)
    for name, source in sources.items():
        op.nodes.append(helper.make_node("Split", [source, ones], steps[name], axis=0))
    state, outputs = "h_in", []
    for t in range(block):
        decay = op("Exp", [op("Mul", [steps["dt_decay"][t], "A_in"], f"dtA_{t}")], f"decay_{t}")
        drive = op("Mul", [steps["dtu"][t], steps["B_col"][t]], f"drive_{t}")
        state = op("Add", [op("Mul", [decay, state], f"carried_{t}"), drive], f"h_{t}")
        outputs.append(op("Squeeze", [op("MatMul", [steps["C_row"][t], state], f"row_{t}"), before_last], f"y_{t}"))  # y_t = C_t h_t
    op("Concat", outputs, "y_block", axis=0)
    op("Identity", [state], "h_out")
    op("Identity", ["A_in"], "A_out")

    def floats(names: list[str]) -> list:
        return [helper.make_tensor_value_info(name, tensor_proto.FLOAT, None) for name in names]

    return helper.make_graph(
        op.nodes, "routed_scan_body", floats(["h_in", "A_in", *(f"{name}_i" for name in SCANNED)]),
        floats(["h_out", "A_out", "y_block"]),
    )


def routed_scan_function(opset: int, block: int = BLOCK, body=block_body):
    """The FunctionProto of ``ssmad::RoutedScan`` with blocks of ``block`` steps, in ONNX ``opset``
    (>= 13); ``body(helper, TensorProto, block)`` builds the Scan's body (``block_body``'s inputs
    and outputs; ``benchmarks/bench_scan_onnx.py`` passes other formulations)."""
    onnx = require("onnx")
    helper, TP = onnx.helper, onnx.TensorProto
    op = _Nodes(helper, TP)
    axis = {name: op.ints(f"axis_{name}", [value]) for name, value in (("0", 0), ("1", 1))}
    zero, one, two, three, four = (op.ints(f"i{k}", [k]) for k in range(5))
    minus_one = op.ints("minus_one", [-1])

    def part(shape: str, start: str, end: str, name: str) -> str:
        return op("Slice", [shape, start, end], name)

    # sizes: G, R, L from index; b, D from delta; N from B
    routes_shape = op("Shape", ["index"], "routes_shape")
    G, R, L = part(routes_shape, zero, one, "G"), part(routes_shape, one, two, "R"), part(routes_shape, two, three, "L")
    delta_shape = op("Shape", ["delta"], "delta_shape")
    b, D = part(delta_shape, zero, one, "b"), part(delta_shape, three, four, "D")
    N = part(op("Shape", ["B"], "B_shape"), three, four, "N")
    T = op.ints("T", [block])
    NB = op("Div", [op("Add", [L, op.ints("T_minus_1", [block - 1])], "L_up"), T], "NB")
    pad_steps = op("Sub", [op("Mul", [NB, T], "Lp"), L], "pad_steps")

    # 1. dt, and every per-position tensor with a zero row at position L
    dt = op("Softplus", [op("Add", ["delta", op("Unsqueeze", ["bias", op.ints("axes_0_2", [0, 2])], "bias_e")], "dt_raw")], "dt")
    pad_position = op.ints("pad_position", [0, 0, 0, 0, 0, 0, 1, 0])  # one more row along axis 2 of (b, G, L, x)

    def rows_by_group(x: str, width: str) -> str:  # (b, G, L, x) -> (G * (L + 1), b, x)
        padded = op("Pad", [x, pad_position], f"{x}_z")
        return op("Reshape", [op("Transpose", [padded], f"{x}_t", perm=[1, 2, 0, 3]), op("Concat", [minus_one, b, width], f"{x}_rows_shape", axis=0)], f"{x}_rows")

    # 2. route orders padded with position L, time-major (Lp, G, R), as flat row numbers
    L_scalar = op("Squeeze", [L, axis["0"]], "L_scalar")
    step_pads = op("Concat", [op.ints("no_pads", [0, 0, 0, 0, 0]), pad_steps], "step_pads", axis=0)
    index_p = op("Pad", ["index", step_pads, L_scalar], "index_p")
    keep_p = op("Pad", ["keep", step_pads, op.scalar("one_f", 1.0, TP.FLOAT)], "keep_p")
    rows_per_group = op("Add", [L_scalar, op.scalar("one_i", 1, TP.INT64)], "rows_per_group")
    group_first = op("Mul", [op("Range", [op.scalar("zero_i", 0, TP.INT64), op("Squeeze", [G, axis["0"]], "G_scalar"), op.scalar("step_i", 1, TP.INT64)], "groups"), rows_per_group], "group_first")
    grouped = op("Add", [index_p, op("Unsqueeze", [group_first, op.ints("axes_1_2", [1, 2])], "group_first_e")], "grouped_p")
    time_major = [2, 0, 1]
    flat = op("Reshape", [op("Transpose", [grouped], "grouped_t", perm=time_major), minus_one], "grouped_flat")
    shared = op("Reshape", [op("Transpose", [index_p], "index_t", perm=time_major), minus_one], "shared_flat")
    blocks_of = {width: op("Concat", [NB, T, G, R, b, width], f"blocks_{width}", axis=0) for width in (D, N)}
    dt_r = op("Reshape", [op("Gather", [rows_by_group(dt, D), flat], "dt_g", axis=0), blocks_of[D]], "dt_r")
    B_r = op("Reshape", [op("Gather", [rows_by_group("B", N), flat], "B_g", axis=0), blocks_of[N]], "B_r")
    C_r = op("Reshape", [op("Gather", [rows_by_group("C", N), flat], "C_g", axis=0), blocks_of[N]], "C_r")
    u_rows = op("Transpose", [op("Pad", ["u", op.ints("pad_u", [0, 0, 0, 0, 1, 0])], "u_z")], "u_rows", perm=[1, 0, 2])
    u_r = op("Reshape", [op("Gather", [u_rows, shared], "u_g", axis=0), blocks_of[D]], "u_r")
    keep_r = op("Reshape", [op("Transpose", [keep_p], "keep_t", perm=time_major), op("Concat", [NB, T, G, R, one, one, one], "keep_shape", axis=0)], "keep_r")
    A_r = op("Unsqueeze", [op("Transpose", ["A"], "A_t", perm=[0, 2, 1]), op.ints("axes_1_2b", [1, 2])], "A_r")  # (G, 1, 1, N, D)

    # 3. the Scan over blocks from h = 0
    h0 = op("ConstantOfShape", [op("Concat", [one, G, R, b, N, D], "h0_shape", axis=0)], "h0", value=helper.make_tensor("zero_f", TP.FLOAT, [1], [0.0]))
    op.nodes.append(helper.make_node(
        "Scan", [h0, A_r, dt_r, u_r, B_r, C_r, keep_r], ["h_final", "A_final", "y_r"],
        body=body(helper, TP, block), num_scan_inputs=len(SCANNED),
    ))

    # 4. raster order: the step at which route (g, r) visits position l, as a row of y_r
    steps = op("Expand", [op("Range", [op.scalar("zero_j", 0, TP.INT64), L_scalar, op.scalar("step_j", 1, TP.INT64)], "steps"), routes_shape], "steps_e")
    inverse = op("ScatterElements", [op("Mul", ["index", op.scalar("zero_k", 0, TP.INT64)], "zeros_i"), "index", steps], "inverse", axis=2)
    GR = op("Mul", [G, R], "GR")
    cells = op("Reshape", [op("Range", [op.scalar("zero_l", 0, TP.INT64), op("Squeeze", [GR, axis["0"]], "GR_scalar"), op.scalar("step_l", 1, TP.INT64)], "cells_flat"), op("Concat", [G, R, one], "cells_shape", axis=0)], "cells")
    back = op("Reshape", [op("Transpose", [op("Add", [op("Mul", [inverse, GR], "inverse_rows"), cells], "back_grid")], "back_t", perm=time_major), minus_one], "back")
    y_rows = op("Reshape", ["y_r", op("Concat", [minus_one, b, D], "y_rows_shape", axis=0)], "y_rows")
    y_l = op("Reshape", [op("Gather", [y_rows, back], "y_g", axis=0), op("Concat", [L, GR, b, D], "y_l_shape", axis=0)], "y_l")  # (L, G*R, b, D)
    w = op("Reshape", ["weight", minus_one], "w_flat")
    summed = op("Einsum", [y_l, w], "summed", equation="lkbd,k->bld")
    skip = op("ReduceSum", [op("Mul", ["Dskip", op("ReduceSum", ["weight", axis["1"]], "w_sum", keepdims=1)], "skip_g"), axis["0"]], "skip", keepdims=0)
    op("Add", [summed, op("Mul", ["u", skip], "skipped")], "y")
    return helper.make_function(
        SCAN_DOMAIN, SCAN_OP, list(INPUTS), ["y"], op.nodes, opset_imports=[helper.make_opsetid("", opset)],
    )

"""The ONNX function ``ssmad::BlockScan``: the blocks of ``ssmad.ops.scan_torch`` as
an ONNX ``Scan`` over blocks, the block's T steps written out in the loop body.

Inputs dt, u (NB, T, G, R, b, D); B, C (NB, T, G, R, b, N); keep (NB, T, G, R, 1, 1, 1);
A (G, 1, 1, D, N). Output y (NB, T, G, R, b, D). Per block: decay = exp(dt A) * keep and
drive = dt u B for the T steps at once, then h_t = decay_t h_{t-1} + drive_t step by step
(state (1, G, R, b, D, N) carried by the loop), y = sum_n h C over the block. The body reads
only its own inputs (A is carried unchanged), no outer-scope names.
"""

from __future__ import annotations

from ssmad.export.requirements import require
from ssmad.ops.scan_torch import SCAN_DOMAIN, SCAN_OP

SCANNED = ("dt", "u", "B", "C", "keep")  # inputs cut into blocks along their first axis


def block_scan_function(opset: int, block: int):
    """The FunctionProto of ``ssmad::BlockScan`` for blocks of ``block`` steps, in ONNX ``opset`` (>= 13)."""
    onnx = require("onnx")
    helper, TensorProto = onnx.helper, onnx.TensorProto
    outer, body = [], []

    def constant(nodes: list, name: str, values: list, dtype=TensorProto.INT64, dims=None) -> str:
        dims = [len(values)] if dims is None else dims
        nodes.append(helper.make_node("Constant", [], [name], value=helper.make_tensor(name, dtype, dims, values)))
        return name

    def op(nodes: list, kind: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(kind, inputs, [output], **attrs))
        return output

    # the loop's body: states h (1, G, R, b, D, N) and A, then one block of each scanned input
    last, before_last = constant(body, "last_axis", [-1]), constant(body, "before_last_axis", [-2])
    dt, u, B, C, keep = (f"{name}_i" for name in SCANNED)
    decay = op(body, "Mul", [op(body, "Exp", [op(body, "Mul", [op(body, "Unsqueeze", [dt, last], "dt_e"), "A_in"], "dtA")], "e"), keep], "decay")
    drive = op(body, "Mul", [
        op(body, "Unsqueeze", [op(body, "Mul", [dt, u], "dtu"), last], "dtu_e"),
        op(body, "Unsqueeze", [B, before_last], "B_e"),
    ], "drive")
    ones = constant(body, "ones", [1] * block)
    decays, drives = [f"decay_{t}" for t in range(block)], [f"drive_{t}" for t in range(block)]
    body.append(helper.make_node("Split", [decay, ones], decays, axis=0))
    body.append(helper.make_node("Split", [drive, ones], drives, axis=0))
    state = "h_in"
    states = []
    for t in range(block):
        state = op(body, "Add", [op(body, "Mul", [decays[t], state], f"carried_{t}"), drives[t]], f"h_{t}")
        states.append(state)
    stacked = op(body, "Concat", states, "states", axis=0)  # (T, G, R, b, D, N)
    read = op(body, "Mul", [stacked, op(body, "Unsqueeze", [C, before_last], "C_e")], "read")
    op(body, "ReduceSum", [read, last], "y_block", keepdims=0)
    op(body, "Identity", [state], "h_out")
    op(body, "Identity", ["A_in"], "A_out")

    def floats(names: list[str]) -> list:
        return [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names]

    loop_body = helper.make_graph(
        body, "block_scan_body", floats(["h_in", "A_in", *(f"{name}_i" for name in SCANNED)]),
        floats(["h_out", "A_out", "y_block"]),
    )

    # outside the loop: h0 = zeros (1, G, R, b, D, N)
    dt_shape = op(outer, "Shape", ["dt"], "dt_shape")
    grbd = op(outer, "Slice", [dt_shape, constant(outer, "from2", [2]), constant(outer, "to6", [6])], "grbd")
    n = op(outer, "Slice", [op(outer, "Shape", ["A"], "A_shape"), constant(outer, "from_last", [-1]), constant(outer, "to_end", [5])], "n")
    h0_shape = op(outer, "Concat", [constant(outer, "one", [1]), grbd, n], "h0_shape", axis=0)
    h0 = op(outer, "ConstantOfShape", [h0_shape], "h0", value=helper.make_tensor("zero_f", TensorProto.FLOAT, [1], [0.0]))
    outer.append(helper.make_node(
        "Scan", [h0, "A", *SCANNED], ["h_final", "A_final", "y"], body=loop_body, num_scan_inputs=len(SCANNED)
    ))
    return helper.make_function(
        SCAN_DOMAIN, SCAN_OP, ["dt", "u", "B", "C", "keep", "A"], ["y"], outer,
        opset_imports=[helper.make_opsetid("", opset)],
    )

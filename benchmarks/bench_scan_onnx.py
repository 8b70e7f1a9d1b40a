"""Formulations of the exported routed scan (standard operators) against each other in onnxruntime,
in one run: SS2D layers of each preset at its 256-px sizes, each formulation and session setting
timed in interleaved rounds (the median of ``--rounds``), as a ratio to the kept formulation.

    python benchmarks/bench_scan_onnx.py                 # batch 1 and 8, 5 rounds
    python benchmarks/bench_scan_onnx.py --batches 1 --rounds 3

Formulations (the ``Scan`` over blocks of ``scan_function``, whose body is swapped):
- ``per-step``: the kept body (``scan_function.block_body``): state (N, D), decay and drive per
  step, blocks of 4 / 8 (kept) / 16 / 32 steps;
- ``block decay``: decay and drive computed for the whole block, then split into steps;
- ``(D, N) state``: the formulation before 2026-12-06, the state laid out (D, N) (broadcasts with
  inner spans of N = 16), block decay, blocks of 16, y_t = h_t C_t;
- ``loop``: an ONNX ``Loop`` over the blocks, whose body gathers block i from the outer tensors,
  instead of the ``Scan``;
Session settings on the kept formulation: graph optimisation "basic" / "extended" / "all"
(default all), 2 intra-op threads, and 2 inter-op threads with the parallel executor.
Every formulation's layer output is checked against PyTorch (max |y - y_torch| / max |y_torch|).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from ssmad.export import scan_function
from ssmad.export.graph import to_onnx
from ssmad.modules.ss2d import SS2D

# (preset, scan order, K, pyramid levels): SS2D layers of each preset at the 256-px decoder sizes
# (map side, channels C; D = 2C): 32 x 32 x 128 and 64 x 64 x 64
PRESETS = (("pyramid_mamba", "sweep", 4, 2), ("mambaad", "hilbert", 8, 0))
SIZES = ((32, 128), (64, 64))
LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def block_decay_body(helper_, tensor_proto, block: int, state_nd: bool = True):
    """Decay (route restarts by keep) and drive for the whole block at once, split into steps;
    the state laid out (N, D) as the kept body's or (D, N) as before."""
    op = scan_function._Nodes(helper_, tensor_proto)
    last, before_last = op.ints("last_axis", [-1]), op.ints("before_last_axis", [-2])
    dt, u, B, C, keep = (f"{name}_i" for name in scan_function.SCANNED)
    d_axis, n_axis = (before_last, last) if state_nd else (last, before_last)
    decay = op("Mul", [op("Exp", [op("Mul", [op("Unsqueeze", [dt, d_axis], "dt_e"), "A_in"], "dtA")], "e"), keep], "decay")
    drive = op("Mul", [op("Unsqueeze", [op("Mul", [dt, u], "dtu"), d_axis], "dtu_e"), op("Unsqueeze", [B, n_axis], "B_e")], "drive")
    C_e = op("Unsqueeze", [C, d_axis], "C_e")
    ones = op.ints("ones", [1] * block)
    decays, drives, reads = ([f"{kind}_{t}" for t in range(block)] for kind in ("decay", "drive", "C"))
    for source, names in ((decay, decays), (drive, drives), (C_e, reads)):
        op.nodes.append(helper_.make_node("Split", [source, ones], names, axis=0))
    state, outputs = "h_in", []
    for t in range(block):
        state = op("Add", [op("Mul", [decays[t], state], f"carried_{t}"), drives[t]], f"h_{t}")
        read = [reads[t], state] if state_nd else [state, reads[t]]
        outputs.append(op("Squeeze", [op("MatMul", read, f"col_{t}"), d_axis], f"y_{t}"))
    op("Concat", outputs, "y_block", axis=0)
    op("Identity", [state], "h_out")
    op("Identity", ["A_in"], "A_out")
    floats = [helper_.make_tensor_value_info(name, tensor_proto.FLOAT, None) for name in ("h_in", "A_in", *(f"{n}_i" for n in scan_function.SCANNED))]
    outputs_ = [helper_.make_tensor_value_info(name, tensor_proto.FLOAT, None) for name in ("h_out", "A_out", "y_block")]
    return helper_.make_graph(op.nodes, "routed_scan_body", floats, outputs_)


def dn_state_body(helper_, tensor_proto, block: int):
    return block_decay_body(helper_, tensor_proto, block, state_nd=False)


def with_dn_state(function):
    """``function`` with A and the initial state laid out (D, N) instead of (N, D)."""
    nodes = []
    for node in function.node:
        if node.output[0] == "A_t":
            node = helper.make_node("Identity", ["A"], ["A_t"])
        elif node.output[0] == "h0_shape":
            inputs = list(node.input)
            inputs[4], inputs[5] = inputs[5], inputs[4]
            node = helper.make_node("Concat", inputs, ["h0_shape"], axis=0)
        nodes.append(node)
    return helper.make_function(function.domain, function.name, list(function.input), list(function.output), nodes,
                                opset_imports=list(function.opset_import))


def as_loop(function):
    """``function`` with its Scan over blocks replaced by a Loop whose body gathers block i."""
    nodes = []
    for node in function.node:
        if node.op_type != "Scan":
            nodes.append(node)
            continue
        body = next(a.g for a in node.attribute if a.name == "body")
        states, scanned = list(node.input[:2]), list(node.input[2:])
        gathers = [helper.make_node("Gather", [outer, "i"], [inner.name], axis=0)
                   for outer, inner in zip(scanned, body.input[2:])]
        loop_body = helper.make_graph(
            [*gathers, *body.node, helper.make_node("Identity", ["cond_in"], ["cond_out"])], "loop_body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             *body.input[:2]],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), *body.output],
        )
        count = helper.make_node("Shape", [scanned[0]], ["loop_shape"], start=0, end=1) if function.opset_import[0].version >= 15 else None
        if count is None:
            raise ValueError("the loop variant needs opset >= 15")
        nodes += [count, helper.make_node("Squeeze", ["loop_shape"], ["loop_count"]), helper.make_node("Loop", ["loop_count", "", *states], list(node.output), body=loop_body)]
    return helper.make_function(function.domain, function.name, list(function.input), list(function.output), nodes,
                                opset_imports=list(function.opset_import))


def layer_model(layer: SS2D, x: torch.Tensor, block: int, body, loop: bool) -> bytes:
    """The layer's ONNX model with the scan function of this formulation."""
    model = to_onnx(layer, x, ["x"], ["y"])
    function = scan_function.routed_scan_function(17, block, body)
    function = with_dn_state(function) if body is dn_state_body else function
    del model.functions[:]
    model.functions.append(as_loop(function) if loop else function)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def session(model: bytes, level: str, intra: int, inter: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.intra_op_num_threads, options.inter_op_num_threads = intra, inter
    if inter > 1:
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds, median taken (default 5)")
    args = parser.parse_args()
    # (name, block, body, loop, optimisation level, intra-op threads, inter-op threads)
    kept = ("per-step (kept)", scan_function.BLOCK, scan_function.block_body, False, "all", 1, 1)
    variants = [
        kept,
        *[(f"per-step T={t}", t, scan_function.block_body, False, "all", 1, 1) for t in (4, 16, 32)],
        ("block decay", scan_function.BLOCK, block_decay_body, False, "all", 1, 1),
        ("(D, N) state, block decay, T=16", 16, dn_state_body, False, "all", 1, 1),
        ("loop", scan_function.BLOCK, scan_function.block_body, True, "all", 1, 1),
        *[(f"kept, optimisation {level}", scan_function.BLOCK, scan_function.block_body, False, level, 1, 1) for level in ("basic", "extended")],
        ("kept, 2 intra-op threads", scan_function.BLOCK, scan_function.block_body, False, "all", 2, 1),
        ("kept, 2 inter-op threads (parallel)", scan_function.BLOCK, scan_function.block_body, False, "all", 1, 2),
    ]
    print(f"onnxruntime {ort.__version__}; torch {torch.__version__}; {args.rounds} interleaved rounds, median")
    print("\n| preset | map | batch | formulation / setting | ms | x kept | max rel. error |\n|---|---|---|---|---|---|---|")
    for preset, order, directions, levels in PRESETS:
        for side, channels in SIZES:
            torch.manual_seed(0)
            layer = SS2D(channels, scan_order=order, num_directions=directions, pyramid_levels=levels).eval()
            for batch in args.batches:
                x = torch.randn(batch, side, side, channels)
                with torch.no_grad():
                    expected = layer(x).numpy()
                models = {}
                for name, block, body, loop, level, intra, inter in variants:
                    key = (block, body, loop)
                    models.setdefault(key, layer_model(layer, x, block, body, loop))
                sessions = [session(models[(v[1], v[2], v[3])], *v[4:]) for v in variants]
                errors = []
                for run in sessions:
                    y = run.run(None, {"x": x.numpy()})[0]
                    errors.append(float(np.abs(y - expected).max() / np.abs(expected).max()))
                times = [[] for _ in variants]
                for _ in range(args.rounds):
                    for run, spent in zip(sessions, times):
                        started = time.perf_counter()
                        run.run(None, {"x": x.numpy()})
                        spent.append(time.perf_counter() - started)
                medians = [statistics.median(spent) for spent in times]
                for variant, median, error in zip(variants, medians, errors):
                    print(f"| {preset} | {side}x{side}x{2 * channels} | {batch} | {variant[0]} | {1e3 * median:.0f} | "
                          f"{median / medians[0]:.2f} | {error:.1e} |", flush=True)


if __name__ == "__main__":
    main()

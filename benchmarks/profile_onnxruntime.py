"""Where onnxruntime spends its time in an exported model: its built-in profiler
(``SessionOptions.enable_profiling``) per operator type, for each preset and batch size.

    python benchmarks/profile_onnxruntime.py                    # both presets, 256 px, batch 1 and 8
    python benchmarks/profile_onnxruntime.py --size 512 --batches 1 --threads 2

The models are untrained (random decoder weights, ResNet18 encoder): the operators and their
costs do not depend on the weights. Each setting runs once to warm up, then ``--repeats`` times
profiled; the table gives each operator type's share of the summed node time and its milliseconds
per image. Operators of the ``ssmad.RoutedScan`` function (onnxruntime inlines it, without the
"/model/..." names of the traced nodes) and of its Scan's body are marked "scan:"; the Scan node
itself is left out (its time is its body's).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ssmad.export.graph import ExportGraph, to_onnx
from ssmad.models import build_model

PRESETS = ("pyramid_mamba", "mambaad")


def exported(preset: str, size: int) -> bytes:
    """The serialised ONNX graph of an untrained ``preset`` model at ``size`` px."""
    torch.manual_seed(0)
    model = build_model(preset, encoder="resnet18", encoder_weights="random")
    return to_onnx(ExportGraph(model.eval()), torch.rand(2, 3, size, size), ["image"], ["anomaly_map", "score"]).SerializeToString()


def node_times(model: bytes, images: np.ndarray, threads: int, repeats: int, folder: Path) -> dict[str, float]:
    """Microseconds per operator type ("scan:" prefix inside the routed scan) over ``repeats`` runs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling, options.profile_file_prefix = True, str(folder / "profile")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    session.run(None, {"image": images})  # warm-up, not counted below
    for _ in range(repeats):
        session.run(None, {"image": images})
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    first_counted = runs[1]["ts"] if len(runs) > 1 else 0
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < first_counted:
            continue
        op = event["args"]["op_name"]
        if op == "Scan":  # its time is its body's nodes, counted below
            continue
        inside = not event["name"].startswith("/")  # the traced model's nodes are named /model/...
        totals[("scan:" if inside else "") + op] += event["dur"]
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="profiled runs per setting (default 2)")
    parser.add_argument("--top", type=int, default=8, help="operator types shown per setting (default 8)")
    args = parser.parse_args()
    print(f"onnxruntime {ort.__version__}, {args.size} px, {args.threads} thread(s), {args.repeats} profiled run(s)")
    print("\n| preset | batch | operator | share | ms/image |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in PRESETS:
            model = exported(preset, args.size)
            for batch in args.batches:
                images = np.random.default_rng(0).random((batch, 3, args.size, args.size), dtype=np.float32)
                totals = node_times(model, images, args.threads, args.repeats, Path(tmp))
                whole = sum(totals.values())
                scan = sum(value for op, value in totals.items() if op.startswith("scan:"))
                per_image = 1e-3 / (args.repeats * batch)
                print(f"| {preset} | {batch} | all nodes | 100 % | {whole * per_image:.0f} |")
                print(f"| {preset} | {batch} | routed scan (function + Scan body) | {100 * scan / whole:.0f} % | {scan * per_image:.0f} |")
                for op, value in sorted(totals.items(), key=lambda item: -item[1])[: args.top]:
                    print(f"| {preset} | {batch} | {op} | {100 * value / whole:.1f} % | {value * per_image:.1f} |", flush=True)


if __name__ == "__main__":
    main()

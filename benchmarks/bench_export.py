"""Exported models against PyTorch on real images: parity (every test image of a class), speed
(images/s at batch 1 and 8) and export time and size, for each run given.

    python benchmarks/bench_export.py RUN [RUN ...] --images ../shared/data/mvtec_ad/bottle/test

Parity per image: max |map_engine - map_torch| / max |map_torch|; scores relative; decisions.
Speed: ``Detector.predict`` with thresholds and heatmaps; batch 8 is the parity run itself (every
image, decoding and resizing the files included, alike for every engine), batch 1 the first
``--speed-images`` images as preprocessed tensors after one warm-up image.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

import ssmad
from ssmad.data import read_image
from ssmad.export import export_onnx, export_openvino


def parity(reference, result) -> tuple[float, float, bool]:
    """(max over images of the relative map error, max relative score error, decisions identical)."""
    peaks = np.abs(reference.maps).reshape(len(reference.maps), -1).max(1)
    maps = (np.abs(result.maps - reference.maps).reshape(len(peaks), -1).max(1) / peaks).max()
    scores = (np.abs(result.scores - reference.scores) / np.abs(reference.scores)).max()
    return float(maps), float(scores), bool((result.decisions == reference.decisions).all())


def batch_one_per_second(detector, tensors: torch.Tensor) -> float:
    detector.predict(tensors[:1], batch_size=1)  # warm-up
    started = time.perf_counter()
    detector.predict(tensors, batch_size=1)
    return len(tensors) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="finished run folders")
    parser.add_argument("--images", required=True, help="folder searched recursively for *.png (e.g. bottle/test)")
    parser.add_argument("--speed-images", type=int, default=4, help="images timed per engine at batch 1 (default 4)")
    parser.add_argument("--out", default=None, help="folder for the exported files (default: each run's folder)")
    args = parser.parse_args()
    paths = sorted(str(p) for p in Path(args.images).rglob("*.png"))
    print(f"{len(paths)} images; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    parity_rows, speed_rows, export_rows = [], [], []
    for run in args.runs:
        run = Path(run)
        folder = Path(args.out) / run.name if args.out else run
        started = time.perf_counter()
        onnx_path = export_onnx(run, folder / "model.onnx")
        export_rows.append((run.name, "onnx", time.perf_counter() - started, onnx_path.stat().st_size))
        detectors = {"pytorch": ssmad.load(run, device="cpu"), "onnxruntime": ssmad.load(onnx_path, device="cpu")}
        if importlib.util.find_spec("openvino") is not None:
            started = time.perf_counter()
            xml = export_openvino(onnx_path, folder / "model.xml")
            size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
            export_rows.append((run.name, "openvino (from the onnx)", time.perf_counter() - started, size))
            detectors["openvino"] = ssmad.load(xml)
        preset = detectors["pytorch"].engine.model.config
        name = f"{run.name} ({preset.scan_order}, K={preset.num_directions}, P={preset.pyramid_levels})"
        results, batch_eight = {}, {}
        for engine, detector in detectors.items():
            started = time.perf_counter()
            results[engine] = detector.predict(paths, batch_size=8)
            batch_eight[engine] = len(paths) / (time.perf_counter() - started)
            print(f"{name} {engine}: {batch_eight[engine]:.2f} images/s at batch 8", flush=True)
            if engine != "pytorch":
                parity_rows.append((name, engine, *parity(results["pytorch"], results[engine])))
                print("parity (map, score, decisions):", *parity_rows[-1][2:], flush=True)
        reference = detectors["pytorch"]
        tensors = torch.stack([reference.transform(read_image(p)) for p in paths[: args.speed_images]])
        for engine, detector in detectors.items():
            speed_rows.append((name, engine, batch_one_per_second(detector, tensors), batch_eight[engine]))
    print("\n| model | engine | max rel. map error | max rel. score error | decisions identical |\n|---|---|---|---|---|")
    for row in parity_rows:
        print(f"| {row[0]} | {row[1]} | {row[2]:.2e} | {row[3]:.2e} | {'yes' if row[4] else 'NO'} |")
    print("\n| model | engine | images/s batch 1 | images/s batch 8 |\n|---|---|---|---|")
    for row in speed_rows:
        print(f"| {row[0]} | {row[1]} | {row[2]:.2f} | {row[3]:.2f} |")
    print("\n| run | format | export s | file MiB |\n|---|---|---|---|")
    for row in export_rows:
        print(f"| {row[0]} | {row[1]} | {row[2]:.1f} | {row[3] / 2**20:.1f} |")


if __name__ == "__main__":
    main()

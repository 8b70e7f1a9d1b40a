"""Exported models against PyTorch: parity on real images, throughput as a ratio to PyTorch,
export time and file sizes, for each run given (or made here), in one run.

    python benchmarks/bench_export.py RUN [RUN ...] --images ../shared/data/mvtec_ad/bottle/test
    python benchmarks/bench_export.py --train ../shared/data/mvtec_ad --class bottle --steps 20 \\
        --weights ../shared/weights/resnet18_partial_conv1-layer3_cudaresnet18.pth --images ../shared/data/mvtec_ad/bottle/test

Engines: pytorch (the checkpoint), onnxruntime (the ONNX file: standard operators), openvino (IR
with ssmad's fused scan where its extension builds, else standard operators) and openvino-int8
(NNCF, when nncf is installed and the run records its data). ``--train`` first makes a short run
of each preset (``--steps`` optimiser steps on one class, 256 px) in ``--out``.

Parity, every image at batch 8: per image max |map - map_torch| / max |map_torch|, the maximum
over images; scores relative; decisions identical (the INT8 model's thresholds are its own).
Throughput: ``Detector.predict`` on the first ``--speed-images`` preprocessed images, batch 1
and 8, with 1 and 2 threads (``torch.set_num_threads``, which every engine follows), after one
warm-up batch; the median of ``--rounds`` rounds in which the engines take turns; each engine's
images/s and its ratio to PyTorch's in the same setting.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import ssmad
from ssmad.data import read_image
from ssmad.export import export_onnx, export_openvino

PRESETS = ("pyramid_mamba", "mambaad")


def parity(reference, result) -> tuple[float, float, bool]:
    """(max over images of the relative map error, max relative score error, decisions identical)."""
    maps = max(  # per image: maps come at each image's own size, so a list
        float(np.abs(np.asarray(got) - want).max() / np.abs(want).max()) for got, want in zip(result.maps, reference.maps)
    )
    scores = (np.abs(result.scores - reference.scores) / np.abs(reference.scores)).max()
    return maps, float(scores), bool((result.decisions == reference.decisions).all())


def images_per_second(detectors: dict, tensors: torch.Tensor, batch: int, rounds: int) -> dict[str, float]:
    """Each detector's images/s on ``tensors``: the median of ``rounds`` rounds, engines interleaved
    within a round (so a slow spell of the machine hits them all), after one warm-up batch each."""
    for detector in detectors.values():
        detector.predict(tensors[:batch], batch_size=batch)
    spent = {engine: [] for engine in detectors}
    for _ in range(rounds):
        for engine, detector in detectors.items():
            started = time.perf_counter()
            detector.predict(tensors, batch_size=batch)
            spent[engine].append(time.perf_counter() - started)
    return {engine: len(tensors) / statistics.median(times) for engine, times in spent.items()}


def exported_models(run: Path, folder: Path, rows: list) -> dict[str, Path]:
    """Export ``run`` to every format this machine can run; rows of (run, format, seconds, MiB)."""
    def timed(label: str, make, *files: str) -> Path:
        started = time.perf_counter()
        path = make()
        size = sum(path.with_name(name).stat().st_size for name in files if path.with_name(name).is_file())
        rows.append((run.name, label, time.perf_counter() - started, size / 2**20))
        return path

    models = {"onnxruntime": timed("onnx", lambda: export_onnx(run, folder / "model.onnx"), "model.onnx")}
    if importlib.util.find_spec("openvino") is None:
        return models
    library = "libssmad_openvino.so"
    models["openvino"] = timed("openvino fp32", lambda: export_openvino(models["onnxruntime"], folder / "model.xml"),
                               "model.xml", "model.bin", library)
    if importlib.util.find_spec("nncf") is not None:
        from ssmad.export.int8 import quantize_openvino

        try:
            models["openvino-int8"] = timed(
                "openvino int8", lambda: quantize_openvino(run, models["onnxruntime"], folder / "model-int8.xml"),
                "model-int8.xml", "model-int8.bin", library,
            )
        except ValueError as error:  # a run that records no data
            print(f"{run.name}: no INT8 model: {error}")
    return models


def train_runs(data: str, class_name: str, steps: int, weights: str | None, out: Path) -> list[Path]:
    """A short 256-px run of each preset on one class (for speed and parity, not accuracy): ``steps``
    optimiser steps, then calibrated on the run's validation normals as training would at its end."""
    from ssmad.engine.calibrate_on_normals import calibrate_model, calibration_dataset
    from ssmad.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint, stored_geometries
    from ssmad.engine.detector import model_from_checkpoint
    from ssmad.engine.trainer import TrainConfig, train

    runs = []
    for preset in PRESETS:
        run = out / f"{preset}_{class_name}"
        if not (run / CHECKPOINT_NAME).is_file():
            train(TrainConfig(data=data, out=str(run), preset=preset, classes=[class_name], image_size=256,
                              encoder="resnet18", weights=weights, epochs=1, max_steps=steps, batch_size=4, device="cpu"))
        payload = load_checkpoint(run)
        if payload["calibration"] is None:  # stopped by max_steps
            model = model_from_checkpoint(payload)
            normals = calibration_dataset(model, data, stored_geometries(payload), classes=[class_name])
            payload["calibration"] = calibrate_model(model, normals, torch.device("cpu")).to_dict()
            save_checkpoint(payload, run / CHECKPOINT_NAME)
        runs.append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="finished run folders")
    parser.add_argument("--images", required=True, help="folder searched recursively for *.png (e.g. bottle/test)")
    parser.add_argument("--speed-images", type=int, default=8, help="images timed per setting (default 8)")
    parser.add_argument("--speed-only", action="store_true", help="time only, without the parity pass over --images")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds, median taken (default 3)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--out", default=None, help="folder for exported files and --train runs (default: each run's folder)")
    parser.add_argument("--train", metavar="DATA", help="first train a short run of each preset on DATA")
    parser.add_argument("--class", dest="class_name", default="bottle", help="with --train: the class (default bottle)")
    parser.add_argument("--steps", type=int, default=20, help="with --train: optimiser steps (default 20)")
    parser.add_argument("--weights", help="with --train: the encoder's weights file")
    args = parser.parse_args()
    runs = [Path(run) for run in args.runs]
    if args.train:
        runs += train_runs(args.train, args.class_name, args.steps, args.weights, Path(args.out or "runs/bench_export"))
    paths = sorted(str(p) for p in Path(args.images).rglob("*.png"))
    print(f"{len(paths)} images; torch {torch.__version__}; {torch.get_num_threads()} thread(s) for parity")
    parity_rows, speed_rows, export_rows = [], [], []
    for run in runs:
        models = exported_models(run, Path(args.out) / run.name if args.out else run, export_rows)
        reference = ssmad.load(run, device="cpu")
        config = reference.engine.model.config
        name = f"{run.name} ({config.scan_order}, K={config.num_directions}, P={config.pyramid_levels})"
        if not args.speed_only:
            expected = reference.predict(paths, batch_size=8)
            for engine, path in models.items():
                detector = ssmad.load(path, device="cpu")
                parity_rows.append((name, engine, *parity(expected, detector.predict(paths, batch_size=8))))
                print(name, engine, "parity (map, score, decisions):", *parity_rows[-1][2:], flush=True)
        if len(reference.transforms) != 1:
            raise SystemExit(f"{run}: timing stacks images of one geometry; this run has {len(reference.transforms)}")
        transform = next(iter(reference.transforms.values()))
        tensors = torch.stack([transform(read_image(p)) for p in paths[: args.speed_images]])
        for threads in args.threads:
            torch.set_num_threads(threads)
            detectors = {"pytorch": ssmad.load(run, device="cpu")}
            detectors.update({engine: ssmad.load(path, device="cpu") for engine, path in models.items()})
            for batch in args.batches:
                speeds = images_per_second(detectors, tensors, batch, args.rounds)
                for engine, speed in speeds.items():
                    speed_rows.append((name, engine, threads, batch, speed, speed / speeds["pytorch"]))
                    print(*speed_rows[-1][:4], f"{speed:.2f} images/s, x{speed_rows[-1][5]:.2f}", flush=True)
    if parity_rows:
        print("\n| model | engine | max rel. map error | max rel. score error | decisions identical |\n|---|---|---|---|---|")
    for row in parity_rows:
        print(f"| {row[0]} | {row[1]} | {row[2]:.2e} | {row[3]:.2e} | {'yes' if row[4] else 'NO'} |")
    print("\n| model | engine | threads | batch | images/s | x PyTorch |\n|---|---|---|---|---|---|")
    for row in speed_rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]:.2f} | {row[5]:.2f} |")
    print("\n| run | format | export s | files MiB |\n|---|---|---|---|")
    for row in export_rows:
        print(f"| {row[0]} | {row[1]} | {row[2]:.1f} | {row[3]:.1f} |")


if __name__ == "__main__":
    main()

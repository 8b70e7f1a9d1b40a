"""How well a multi-class run infers the class of images that nothing names.

Every test image of the run's classes is given to ``Detector.infer_classes`` as a decoded image
(no path, so no folder can name its class, as an upload to ``ssmad serve``). Per class and per
label it prints how often the nearest class is right, how often its confidence reaches
``MIN_CLASS_CONFIDENCE`` (used: the class's threshold; else the global one), how often a used
class is right, and the confidences' range. ``--foreign DIR`` adds images of products the model
never saw: none of them should get a class (used), since any class would be wrong.

    python benchmarks/class_inference.py RUN [--data ROOT ...] [--foreign DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import ssmad
from ssmad.data import build_dataset
from ssmad.data.image_io import read_image
from ssmad.data.layouts import list_images
from ssmad.engine.checkpoint import load_checkpoint
from ssmad.engine.class_inference import MIN_CLASS_CONFIDENCE

BATCH = 8


def guesses_of(detector, paths: list[Path]) -> tuple[list, float]:
    """The detector's guess for each image file, and the seconds per image it took (decoding included)."""
    guesses, start = [], time.perf_counter()
    for begin in range(0, len(paths), BATCH):
        guesses += detector.infer_classes([read_image(path) for path in paths[begin:begin + BATCH]], BATCH)
    return guesses, (time.perf_counter() - start) / max(len(paths), 1)


def row(title: str, truth: list[str | None], guesses: list) -> str:
    names = np.array([g.name for g in guesses])
    used = np.array([g.used for g in guesses])
    confidence = np.array([g.confidence for g in guesses])
    if truth[0] is None:  # foreign images: no class is right
        nearest, right_used = "–", "–"
    else:
        right = names == np.array(truth)
        nearest = f"{100 * right.mean():.1f}"
        right_used = f"{100 * right[used].mean():.1f}" if used.any() else "–"
    return (f"| {title} | {len(guesses)} | {nearest} | {100 * used.mean():.1f} | {right_used} "
            f"| {confidence.min():.2f} / {np.median(confidence):.2f} / {confidence.max():.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a multi-class run folder, calibrated with class prototypes")
    parser.add_argument("--data", action="append", help="dataset root(s) (default: the run's)")
    parser.add_argument("--dataset", default=None, help="dataset layout (default: the run's)")
    parser.add_argument("--foreign", help="a folder of images of products the model was not trained on")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    detector = ssmad.load(args.run, args.device)
    reason = detector.class_inference_unavailable()
    if reason is not None:
        raise SystemExit(f"{args.run}: {reason}")
    trained = load_checkpoint(args.run)["train_config"]
    dataset = build_dataset(args.dataset or trained["dataset"], args.data or trained["data"], "test",
                            classes=detector.class_names, image_size=detector.geometries)
    samples = dataset.samples
    guesses, seconds = guesses_of(detector, [s.path for s in samples])
    print(f"run {args.run}: classes {', '.join(detector.class_names)}; minimum confidence {MIN_CLASS_CONFIDENCE}; "
          f"{seconds * 1000:.0f} ms per image (decode + embed + compare)")
    print("| images | count | nearest class right % | used (confident) % | used and right % | confidence min / median / max |")
    print("|---|---|---|---|---|---|")
    for name in detector.class_names:
        for label, kind in ((0, "good"), (1, "defective")):
            chosen = [i for i, s in enumerate(samples) if s.class_name == name and s.label == label]
            if chosen:
                print(row(f"{name} {kind}", [name] * len(chosen), [guesses[i] for i in chosen]))
    print(row("**all**", [s.class_name for s in samples], guesses))
    if args.foreign:
        foreign = list_images(Path(args.foreign))
        print(row(f"foreign ({args.foreign})", [None] * len(foreign), guesses_of(detector, foreign)[0]))


if __name__ == "__main__":
    main()

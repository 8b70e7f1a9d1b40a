"""Fault: fuzzed inputs for train, test and predict -> no traceback, each unusable file named with
its reason, the rest processed; EXIF orientation applied alike in all three."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from engine_tiny import tiny_cli_args
from fuzz_files import NON_UTF8_NAME, write_fuzzed
from PIL import Image

import ssmad
from ssmad.cli import main
from ssmad.data import build_dataset, read_image
from ssmad.engine.checkpoint import load_checkpoint


def _fuzzed_copy(data, tmp_path, folder: str):
    """A copy of the data with the fuzzed files added to wood/<folder>; returns (root, files)."""
    copy = tmp_path / "data"
    shutil.copytree(data, copy, symlinks=True)
    files = write_fuzzed(copy / "wood" / folder, data / "wood" / "train" / "good" / "000.png")
    return copy, files


def _named(text: str, files: dict[str, bool]) -> None:
    """Every unusable file, and no usable one, is named in ``text`` (by the ASCII start of its name)."""
    for name, usable in files.items():
        label = re.match(r"[ -~]*", name).group()
        assert (label in text) != usable, name


def test_predict_on_fuzzed_files(tiny_run, tmp_path):
    data, run = tiny_run
    inputs = tmp_path / "inputs"
    files = write_fuzzed(inputs, data / "wood" / "train" / "good" / "000.png")
    out = tmp_path / "out"
    finished = subprocess.run(
        [sys.executable, "-m", "ssmad", "predict", str(run), str(inputs), "--out", str(out), "--device", "cpu"],
        capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"}, timeout=300,
    )
    stderr = finished.stderr.decode("utf-8", "backslashreplace")
    assert finished.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    skipped = (out / "skipped.csv").read_bytes().decode("utf-8", "surrogateescape")
    _named(skipped, files)
    _named(stderr, files)
    assert "too small" in skipped and "decompression bomb" in skipped and "empty" in skipped
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(os.path.basename(row["path"]) for row in rows) == sorted(n for n, ok in files.items() if ok)
    assert all(np.isfinite(row["score"]) and row["overlay"] for row in rows)
    assert len(list(csv.DictReader((out / "predictions.csv").open(encoding="utf-8", errors="surrogateescape")))) == len(rows)


def test_test_on_fuzzed_files(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    copy, files = _fuzzed_copy(data, tmp_path, "test/good")
    capsys.readouterr()
    assert main(["test", str(run), "--data", str(copy), "--device", "cpu", "--out", str(tmp_path / "t")]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    _named(captured.err, files)
    report = json.loads((tmp_path / "t" / "metrics.json").read_text())
    clean = len(build_dataset("mvtec", data, "test"))
    assert report["num_images"] == clean + sum(files.values())
    assert sorted(os.path.basename(item["path"]) for item in report["skipped"]) == sorted(
        name for name, usable in files.items() if not usable)


@pytest.mark.slow
def test_train_on_fuzzed_files(tiny_run, tmp_path, capsys):
    data, _ = tiny_run
    copy, files = _fuzzed_copy(data, tmp_path, "train/good")
    run = tmp_path / "run"
    assert main([*tiny_cli_args(copy, run), "--epochs", "1"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Logging error" not in captured.err
    log = (run / "train.log").read_text(errors="surrogateescape")
    _named(log, files)
    _named(captured.err, files)
    recorded = load_checkpoint(run)["data_files"]
    assert sorted(os.path.basename(path) for path in recorded["rejected"]) == sorted(
        name for name, usable in files.items() if not usable)
    assert any(stamp[0].endswith(NON_UTF8_NAME) for stamp in recorded["usable"])


def test_exif_orientation_is_the_same_in_train_test_and_predict(tiny_run, tmp_path):
    data, run = tiny_run
    copy, _ = _fuzzed_copy(data, tmp_path, "test/good")
    path = copy / "wood" / "test" / "good" / "exif_rotated.jpg"
    upright = read_image(path)
    detector = ssmad.load(run, "cpu")
    dataset = build_dataset("mvtec", copy, "test", classes="wood", image_size=detector.geometries,
                            mean=detector.mean, std=detector.std)
    index = next(i for i, sample in enumerate(dataset.samples) if sample.path == path)
    assert torch.equal(dataset[index]["image"], detector.transforms[detector.geometries["wood"]](upright))  # test (and train: same dataset)
    with Image.open(path) as raw:
        assert raw.size == upright.size[::-1] != upright.size  # stored turned, read upright
        from_memory = detector.predict(raw).scores
    assert np.allclose(detector.predict(path).scores, from_memory, atol=1e-6)  # predict, file or PIL image

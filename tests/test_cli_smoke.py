"""The command line on tiny synthetic data: train -> test -> predict, and every bad input."""

import json

import pytest
import torch
from engine_tiny import tiny_cli_args

from ssmad.cli import main


def test_train_then_test_writes_tables_overlays_and_the_log(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    assert (run / "train.log").read_text().count("epoch 1/1") == 1
    assert (run / "test" / "metrics.md").is_file()  # from train --test
    out = tmp_path / "ader"
    assert main(["test", str(run), "--device", "cpu", "--protocol", "ader", "--out", str(out), "--overlays", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| **mean** |" in printed
    report = json.loads((out / "metrics.json").read_text())
    assert report["protocol"] == "ader" and set(report["metrics"]) == {"nut", "wood", "mean"}
    assert set(report["metrics"]["mean"]) >= {"i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro"}
    assert (out / "metrics.csv").read_text().startswith("class,i_auroc")
    assert len(list((out / "overlays" / "nut").glob("*.png"))) == 2


def test_predict_reports_and_skips_unreadable_files(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    bad = tmp_path / "bad.jpg"
    bad.write_text("no image here")
    code = main(["predict", str(run), str(data / "wood" / "test"), str(bad), "--out", str(tmp_path / "p"),
                 "--no-overlays", "--device", "cpu"])
    assert code == 0
    assert "skipped" in capsys.readouterr().err
    rows = (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()
    assert rows and all(json.loads(r)["class"] == "wood" for r in rows)
    assert not (tmp_path / "p" / "overlays").exists()
    assert main(["predict", str(run), str(bad), "--out", str(tmp_path / "q"), "--device", "cpu"]) == 1


def run_refused(argv: list[str]) -> int:
    """The exit status of ``ssmad argv``, also when argparse exits (usage errors)."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


# Each bad command line: its arguments, as a function of (data, run, an empty folder), and its message.
BAD_INPUTS = {
    "train without --data": (lambda data, run, tmp: ["train", "--out", str(tmp / "r")], "needs --data"),
    "train into an existing run": (lambda data, run, tmp: tiny_cli_args(data, run), "already exists"),
    "resume without a checkpoint": (
        lambda data, run, tmp: ["train", "--resume", "--out", str(tmp / "none")], "no checkpoint"),
    "predict without a checkpoint": (lambda data, run, tmp: ["predict", str(tmp / "none"), str(data)], "no checkpoint"),
    "predict an unknown class": (
        lambda data, run, tmp: ["predict", str(run), str(data), "--class", "screw", "--device", "cpu"],
        "unknown class 'screw'"),
    "unknown model field": (
        lambda data, run, tmp: [*tiny_cli_args(data, tmp / "r"), "--set", "depth=3"], "unknown ModelConfig field"),
    "image size not a multiple of 32": (
        lambda data, run, tmp: [*tiny_cli_args(data, tmp / "r"), "--image-size", "100"], "multiples of 32"),
    "batch larger than the training set": (
        lambda data, run, tmp: [*tiny_cli_args(data, tmp / "r"), "--batch-size", "64"], "batch size"),
    "batch not divisible by --accumulate": (
        lambda data, run, tmp: [*tiny_cli_args(data, tmp / "r"), "--accumulate", "3"], "multiple of processes"),
    "cuda without a GPU": (
        lambda data, run, tmp: ["predict", str(run), str(data), "--device", "cuda"], "no CUDA GPU"),
    "missing dataset folder": (
        lambda data, run, tmp: ["train", "--data", str(tmp / "nowhere"), "--out", str(tmp / "r"), "--weights", "random",
                                "--device", "cpu"],
        "dataset folder not found"),
    "unknown preset": (lambda data, run, tmp: ["train", "--out", str(tmp / "r"), "--preset", "resnet"],
                       "invalid choice: 'resnet'"),
}
NEEDS_NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")


@pytest.mark.parametrize("case", [pytest.param(case, marks=NEEDS_NO_GPU) if "GPU" in case else case for case in BAD_INPUTS])
def test_bad_input_is_refused_with_its_message(tiny_run, tmp_path, capsys, case):
    arguments, message = BAD_INPUTS[case]
    assert run_refused(arguments(tiny_run.data, tiny_run.run, tmp_path)) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "Traceback" not in error


def test_a_truncated_checkpoint_is_named(tiny_run, tmp_path, capsys):
    truncated = tmp_path / "checkpoint.pt"
    truncated.write_bytes((tiny_run.run / "checkpoint.pt").read_bytes()[:1000])
    assert main(["test", str(truncated), "--device", "cpu"]) == 2
    assert "truncated" in capsys.readouterr().err


def test_predict_writes_masks_and_regions_with_the_pixel_threshold_and_min_area_given(tiny_run, tmp_path):
    import csv

    import numpy as np
    from PIL import Image

    data, run = tiny_run
    out = tmp_path / "p"
    threshold = json.loads((run / "test" / "metrics.json").read_text())["decision"]["wood"]["threshold"] * 0.9
    assert main(["predict", str(run), str(data / "wood" / "test"), "--out", str(out), "--no-overlays",
                 "--pixel-threshold", str(threshold), "--min-area", "3", "--device", "cpu"]) == 0
    rows = [json.loads(r) for r in (out / "predictions.jsonl").read_text().splitlines()]
    table = list(csv.DictReader((out / "predictions.csv").open()))
    for row, line in zip(rows, table):
        mask = np.asarray(Image.open(out / "masks" / row["mask"])) > 0
        assert row["pixel_threshold"] == threshold and mask.sum() == sum(r["area_px"] for r in row["regions"])
        assert all(region["area_px"] >= 3 for region in row["regions"])
        assert int(line["regions"]) == len(row["regions"])
        largest = max((r["area_px"] for r in row["regions"]), default="")
        assert line["largest_region_px"] == str(largest)
    assert any(row["regions"] for row in rows)

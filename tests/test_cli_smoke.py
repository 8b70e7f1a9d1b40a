"""The command line on tiny synthetic data: train -> test -> predict, and every bad input."""

import json

import pytest
import torch
from engine_tiny import make_tiny_data, tiny_cli_args

from ssmad.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_tiny_data(root / "data")
    run = root / "run"
    assert main([*tiny_cli_args(data, run), "--epochs", "1", "--test"]) == 0
    return data, run


def test_train_then_test_writes_tables_overlays_and_the_log(trained, capsys):
    data, run = trained
    assert (run / "train.log").read_text().count("epoch 1/1") == 1
    assert main(["test", str(run), "--device", "cpu", "--protocol", "ader", "--out", str(run / "ader"), "--overlays", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| **mean** |" in printed
    report = json.loads((run / "ader" / "metrics.json").read_text())
    assert report["protocol"] == "ader" and set(report["metrics"]) == {"nut", "wood", "mean"}
    assert set(report["metrics"]["mean"]) >= {"i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro"}
    assert (run / "ader" / "metrics.csv").read_text().startswith("class,i_auroc")
    assert len(list((run / "ader" / "overlays" / "nut").glob("*.png"))) == 2
    assert (run / "test" / "metrics.md").is_file()  # from train --test


def test_predict_reports_and_skips_unreadable_files(trained, tmp_path, capsys):
    data, run = trained
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


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_inputs_are_one_line_errors(trained, tmp_path, capsys):
    data, run = trained
    assert "needs --data" in _error(["train", "--out", str(tmp_path / "r")], capsys)
    assert "already exists" in _error(tiny_cli_args(data, run), capsys)
    assert "no checkpoint" in _error(["train", "--resume", "--out", str(tmp_path / "none")], capsys)
    assert "no checkpoint" in _error(["predict", str(tmp_path / "none"), str(data)], capsys)
    assert "unknown class 'screw'" in _error(["predict", str(run), str(data), "--class", "screw", "--device", "cpu"], capsys)
    assert "unknown ModelConfig field" in _error([*tiny_cli_args(data, tmp_path / "r1"), "--set", "depth=3"], capsys)
    assert "multiple of 32" in _error([*tiny_cli_args(data, tmp_path / "r2"), "--image-size", "100"], capsys)
    assert "batch size" in _error([*tiny_cli_args(data, tmp_path / "r3"), "--batch-size", "64"], capsys)
    assert "multiple of processes" in _error([*tiny_cli_args(data, tmp_path / "r4"), "--accumulate", "3"], capsys)
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in _error(["predict", str(run), str(data), "--device", "cuda"], capsys)
    truncated = tmp_path / "checkpoint.pt"
    truncated.write_bytes((run / "checkpoint.pt").read_bytes()[:1000])
    assert "truncated" in _error(["test", str(truncated), "--device", "cpu"], capsys)
    assert "error" in _error(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r5"), "--device", "cpu"], capsys)
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path), "--preset", "resnet"])

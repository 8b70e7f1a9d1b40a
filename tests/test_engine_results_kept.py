"""Results are never lost at the end: test checks classes first, predict writes rows as it scores
(on the shared tiny run, trained on wood and nut)."""

import csv
import json

import numpy as np
import pytest
from engine_tiny import IMAGE_SIZE, tiny_config
from PIL import Image

import ssmad
from ssmad.cli import main
from ssmad.data import make_synthetic
from ssmad.engine import prediction
from ssmad.engine.trainer import Trainer


@pytest.fixture
def data_with_grid(tmp_path):
    """Synthetic wood, nut and grid: a class more than the tiny run was trained on."""
    return make_synthetic(tmp_path / "data", classes=["wood", "nut", "grid"], num_train=6, num_test=6,
                          image_size=IMAGE_SIZE)


def test_a_run_on_some_classes_of_the_data_takes_only_those(data_with_grid, tmp_path):
    trainer = Trainer(tiny_config(data_with_grid, tmp_path / "run", classes=["wood", "nut"]))
    assert trainer.class_names == ["wood", "nut"]
    assert {s.class_name for s in (*trainer.train_set.samples, *trainer.val_set.samples)} == {"wood", "nut"}


def test_test_with_an_untrained_class_is_refused_before_scoring(tiny_run, data_with_grid, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ssmad.engine.evaluation.predict_test_set", lambda *a, **k: pytest.fail("scored"))
    argv = ["test", str(tiny_run.run), "--data", str(data_with_grid), "--classes", "grid", "--device", "cpu", "--out",
            str(tmp_path / "out")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "grid" in error and "nut, wood" in error


def test_predict_rows_are_written_as_they_are_scored(tiny_run, tmp_path, capsys, monkeypatch):
    data, run = tiny_run
    calls = []
    score = ssmad.engine.detector.Detector.score_images

    def interrupted_after_one_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return score(self, *args, **kwargs)

    monkeypatch.setattr(ssmad.engine.detector.Detector, "score_images", interrupted_after_one_batch)
    out = tmp_path / "p"
    code = main(["predict", str(run), str(data / "wood" / "test"), "--out", str(out), "--batch-size", "2",
                 "--no-overlays", "--device", "cpu"])
    assert code == 130
    assert "2 row(s) written" in capsys.readouterr().err
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2
    assert len(list(csv.DictReader((out / "predictions.csv").open()))) == 2


def test_a_failing_overlay_loses_no_row(tiny_run, tmp_path, monkeypatch):
    data, run = tiny_run
    written = []

    def overlay_fails_once(path, *args):
        written.append(path)
        if len(written) == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(prediction, "save_overlay", overlay_fails_once)
    summary = prediction.predict_files(ssmad.load(run, "cpu"), [str(data / "wood" / "test")], tmp_path / "p", batch_size=2)
    rows = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[1]["overlay"] == "" and rows[0]["overlay"]
    assert any("overlay" in reason and "No space" in reason for _, reason in summary.skipped)


def test_predict_decodes_each_file_once(tiny_run, tmp_path, monkeypatch):
    data, run = tiny_run
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    prediction.predict_files(ssmad.load(run, "cpu"), [str(data / "nut" / "test")], tmp_path / "p", batch_size=4)
    assert len(opened) == 6


def test_pil_images_get_the_same_conversion_as_files(tiny_run, tmp_path):
    run = tiny_run.run
    detector = ssmad.load(run, "cpu")
    values = (np.random.default_rng(0).integers(0, 65536, (64, 64))).astype(np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as in_memory:
        from_pil = detector.predict(in_memory)
    from_file = detector.predict(path)
    assert np.allclose(from_pil.scores, from_file.scores, atol=1e-6)
    palette = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).convert("P")
    palette.save(tmp_path / "palette.png")
    assert np.allclose(detector.predict(palette).scores, detector.predict(tmp_path / "palette.png").scores, atol=1e-6)

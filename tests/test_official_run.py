"""``ssmad convert`` writes a run that ``predict`` and ``test`` accept and that scores as the
in-memory converted model does; ``ssmad calibrate`` reproduces a run's thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from official_fixtures import load_fixture, official_state_dict, with_encoder

import ssmad
from ssmad.cli import main
from ssmad.data import ImageTransform, make_synthetic, read_image
from ssmad.engine.thresholds import Calibration
from ssmad.engine.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def converted_run(tmp_path_factory):
    """(official checkpoint with its encoder, synthetic 256 px data, run written by ``ssmad convert``)."""
    root = tmp_path_factory.mktemp("convert")
    checkpoint = root / "mambaad.pth"
    torch.save({"net": with_encoder(official_state_dict("mambaad", load_fixture("mambaad")))}, checkpoint)
    data = make_synthetic(root / "data", classes=["wood"], num_train=4, num_test=3, image_size=256, seed=0)
    run = root / "run"
    args = ["convert", str(checkpoint), "--preset", "mambaad", "--out", str(run), "--data", str(data),
            "--val-fraction", "0.5", "--device", "cpu"]
    assert main(args) == 0
    return checkpoint, data, run


@pytest.mark.slow
def test_converted_run_predicts_the_in_memory_models_scores(converted_run, tmp_path):
    checkpoint, data, run = converted_run
    assert main(["predict", str(run), str(data / "wood" / "test"), "--out", str(tmp_path), "--no-overlays", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {row["class"] for row in rows} == {"wood"}
    model = ssmad.convert(checkpoint, "mambaad")
    transform = ImageTransform(256, model.encoder.mean, model.encoder.std)
    images = torch.stack([transform(read_image(row["path"])) for row in rows])
    _, scores = model.anomaly_map(images)
    np.testing.assert_allclose([row["score"] for row in rows], scores.numpy(), rtol=1e-6)


@pytest.mark.slow
def test_converted_run_records_its_source_and_official_function(converted_run):
    checkpoint, data, run = converted_run
    payload = load_checkpoint(run)
    assert payload["converted_from"]["file"] == payload["encoder"]["weights_source"] == checkpoint.name
    encoder = ssmad.convert(checkpoint, "mambaad").encoder.state_dict()
    assert all(torch.equal(payload["encoder_state"][k], v) for k, v in encoder.items())
    assert payload["class_names"] == ["wood"] and payload["train_config"]["data"] == str(data)
    assert payload["model_config"]["map_scale"] == "official" and payload["model_config"]["scan_order"] == "hilbert"
    assert payload["calibration"]["classes"]["wood"]["num_images"] == 2


@pytest.mark.slow
def test_converted_run_is_tested_and_recalibrated_like_a_trained_one(converted_run, tmp_path):
    _, _, run = converted_run
    stored = load_checkpoint(run)["calibration"]
    assert main(["test", str(run), "--out", str(tmp_path), "--overlays", "0", "--device", "cpu"]) == 0
    assert (tmp_path / "metrics.json").is_file()
    assert main(["calibrate", str(run), "--device", "cpu"]) == 0
    assert _thresholds(load_checkpoint(run)["calibration"]) == pytest.approx(_thresholds(stored), rel=1e-6)


def test_pyramid_conversion_defaults_to_the_official_codes_function(tmp_path):
    checkpoint = tmp_path / "pyramid.pth"
    torch.save(official_state_dict("pyramid", load_fixture("pyramid")), checkpoint)
    official = ssmad.convert(checkpoint, "pyramid_mamba", weights="random").config
    assert (official.pyramid_levels, official.map_scale) == (1, "official")
    paper = ssmad.convert(checkpoint, "pyramid_mamba", weights="random", pyramid_levels=2, map_scale="sum").config
    assert (paper.pyramid_levels, paper.map_scale) == (2, "sum")


def _thresholds(calibration: dict) -> list[float]:
    cal = Calibration.from_dict(calibration)
    return [c.threshold for c in cal.classes.values()] + [cal.overall.threshold]


def test_calibrate_reproduces_a_trained_runs_thresholds_from_the_same_normals(tiny_run_copy):
    run = tiny_run_copy.run
    stored = load_checkpoint(run)["calibration"]
    assert main(["calibrate", str(run), "--device", "cpu"]) == 0
    again = load_checkpoint(run)["calibration"]
    assert _thresholds(again) == pytest.approx(_thresholds(stored), rel=1e-6)
    assert again["global"]["num_images"] == stored["global"]["num_images"]


def test_calibrate_some_classes_on_new_normals_keeps_the_others(tiny_run_copy, capsys):
    run = tiny_run_copy.run
    before = Calibration.from_dict(load_checkpoint(run)["calibration"])
    assert main(["calibrate", str(run), "--classes", "wood", "--all-normals", "--device", "cpu"]) == 0
    after = Calibration.from_dict(load_checkpoint(run)["calibration"])
    assert after.classes["nut"] == before.classes["nut"] and after.overall == before.overall
    assert after.classes["wood"].num_images == 6  # every training normal of the class
    assert main(["calibrate", str(run), "--classes", "wood", "--target-fpr", "0.2"]) == 2
    assert "keeps the other classes at target FPR" in capsys.readouterr().err
    assert main(["calibrate", str(run), "--classes", "grid"]) == 2
    assert "not in this run" in capsys.readouterr().err


def test_calibrate_computes_pixel_thresholds_by_the_chosen_rule_from_the_validation_normals(tiny_run_copy, capsys):
    from ssmad.data import build_dataset

    run = tiny_run_copy.run
    assert main(["calibrate", str(run), "--pixel-rule", "mean_std", "--pixel-num-std", "2", "--device", "cpu"]) == 0
    assert "pixel threshold" in capsys.readouterr().out
    calibration = Calibration.from_dict(load_checkpoint(run)["calibration"])
    detector = ssmad.load(run, "cpu")
    normals = build_dataset("mvtec", tiny_run_copy.data, "val", classes=["wood"], image_size=64,
                            mean=detector.mean, std=detector.std, val_fraction=0.1, seed=0)
    maps = np.stack(detector.predict(torch.stack([item["image"] for item in normals])).maps)
    wood = calibration.classes["wood"].pixel
    assert (wood.rule, wood.num_std, wood.num_images) == ("mean_std", 2.0, len(normals))
    assert wood.value == pytest.approx(maps.mean() + 2 * maps.std(), rel=1e-5)
    assert main(["calibrate", str(run), "--target-fpr", "0.05", "--device", "cpu"]) == 0  # keeps the run's rule
    assert Calibration.from_dict(load_checkpoint(run)["calibration"]).pixel_rule.rule == "mean_std"


def test_calibrate_warns_naming_the_normals_the_model_was_trained_on(tiny_run_copy):
    run = tiny_run_copy.run
    with pytest.warns(UserWarning, match=r"calibrating on 10 normal\(s\) the model was trained on \(.*train/good.*and 7 more"):
        assert main(["calibrate", str(run), "--all-normals", "--device", "cpu"]) == 0

"""Training end to end on tiny synthetic data: exact resume, feature cache, divergence; and what a
finished run holds and predicts (on the shared tiny run)."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from engine_tiny import make_tiny_data, tiny_config

import ssmad
from ssmad.data import build_dataset
from ssmad.data.geometry import Geometry
from ssmad.engine.checkpoint import CheckpointError, load_checkpoint
from ssmad.engine.feature_cache import build_feature_source
from ssmad.engine.prediction import predict_files
from ssmad.engine.trainer import Trainer, TrainingDiverged, resume_config


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    """An uninterrupted run (feature noise and drop-path on, so RNG streams matter)."""
    out = tmp_path_factory.mktemp("full")
    result = Trainer(tiny_config(tiny_data, out)).fit()
    assert result.finished
    return out


@pytest.mark.slow
def test_resumed_run_ends_with_exactly_the_uninterrupted_weights(tiny_data, finished_run, tmp_path):
    stopped = Trainer(tiny_config(tiny_data, tmp_path, max_steps=3)).fit()
    assert not stopped.finished and stopped.global_step == 3
    assert load_checkpoint(tmp_path)["progress"]["step_in_epoch"] == 1  # stopped mid-epoch
    resume_and_compare(tmp_path, finished_run)


def resume_and_compare(run, finished_run):
    """Finish the interrupted ``run`` and check it ends exactly as the uninterrupted one."""
    resumed = Trainer(resume_config(run, max_steps=None), resume=True).fit()
    assert resumed.finished
    expected = load_checkpoint(finished_run)
    actual = load_checkpoint(run)
    assert expected["trainable_state"].keys() == actual["trainable_state"].keys()
    for key, value in expected["trainable_state"].items():
        assert torch.equal(value, actual["trainable_state"][key]), key
    assert actual["progress"]["epoch_losses"] == expected["progress"]["epoch_losses"]
    assert actual["calibration"] == expected["calibration"]


@pytest.mark.slow
def test_ctrl_c_inside_a_step_waits_for_the_step_to_finish(tiny_data, finished_run, tmp_path):
    trainer = Trainer(tiny_config(tiny_data, tmp_path))
    step = trainer.optimizer.step
    calls = []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives after the gradients, before the update
        return step(*args, **kwargs)

    trainer.optimizer.step = interrupted_step
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert len(calls) == 2 and load_checkpoint(tmp_path)["progress"]["global_step"] == 2
    resume_and_compare(tmp_path, finished_run)


def test_too_few_validation_normals_for_the_target_rate_are_warned_about(tiny_run):
    log = (tiny_run.run / "train.log").read_text()
    assert "too few calibration normals (nut 1, wood 1) to show a 0.01 false-positive rate" in log


def test_checkpoint_holds_what_prediction_needs(tiny_run):
    payload = load_checkpoint(tiny_run.run)
    assert payload["preset"] == "pyramid_mamba"
    assert payload["class_names"] == ["nut", "wood"]
    assert payload["encoder"] == {"name": "resnet18", "weights_source": "random", "weights_sha256": None}
    assert set(payload["calibration"]["classes"]) == {"nut", "wood"}
    assert payload["ssmad_version"] == ssmad.__version__


def test_existing_run_is_never_overwritten_and_finished_runs_do_not_resume(tiny_run):
    data, run = tiny_run
    with pytest.raises(CheckpointError, match="already exists"):
        Trainer(tiny_config(data, run)).fit()
    with pytest.raises(CheckpointError, match="finished run"):
        Trainer(resume_config(run), resume=True).fit()
    with pytest.raises(CheckpointError, match="not 'mambaad'"):
        Trainer(tiny_config(data, run, preset="mambaad"), resume=True).fit()


def test_disk_and_memory_caches_hold_the_encoder_features(tiny_data, tmp_path):
    model = ssmad.models.build_model("pyramid_mamba", encoder="resnet18", encoder_weights="random")
    dataset = build_dataset("mvtec", tiny_data, "train", image_size=64)
    memory = build_feature_source(model, dataset, torch.device("cpu"), "memory", batch_size=3)
    disk = build_feature_source(model, dataset, torch.device("cpu"), "disk", tmp_path, batch_size=3)
    indices = torch.tensor([4, 0, 7])
    images = torch.stack([dataset[int(i)]["image"] for i in indices])
    for direct, cached_m, cached_d in zip(model.encode(images), memory.batch(indices, torch.device("cpu")),
                                          disk.batch(indices, torch.device("cpu"))):
        assert torch.allclose(direct, cached_m, atol=1e-5)
        assert torch.equal(cached_m, cached_d)
    assert memory.class_names == [s.class_name for s in dataset.samples]


def test_detector_predict_and_class_assignment(tiny_run):
    tiny_data, run = tiny_run
    detector = ssmad.load(run, device="cpu")
    wood = sorted((tiny_data / "wood" / "test").rglob("*.png"))[:2]
    result = detector.predict([*wood, tiny_data / "missing.png"])
    assert len(result) == 2 and result.calibration_classes == ["wood", "wood"]
    assert result.skipped[0][0].endswith("missing.png")
    threshold = detector.calibration.for_class("wood").threshold
    assert np.array_equal(result.decisions, result.scores >= threshold)
    assert np.allclose(result.normalized > 0.5, result.decisions)
    assert [m.shape for m in result.maps] == [(64, 64), (64, 64)] and result.geometries == ["64x64", "64x64"]
    assert all(0 <= h.min() <= h.max() <= 1 for h in result.heatmaps) and result.warnings == [[], []]
    transform = detector.transforms[Geometry(64, 64)]
    tensor_result = detector.predict(torch.stack([transform(ssmad.data.read_image(p)) for p in wood]))
    assert np.allclose(tensor_result.scores, result.scores, atol=1e-5)
    assert tensor_result.calibration_classes == [None, None]  # no path: the global threshold
    assert detector.predict(wood[0], class_name="nut").calibration_classes == ["nut"]
    with pytest.raises(ValueError, match="unknown class 'screw'"):
        detector.predict(wood[0], class_name="screw")
    with pytest.raises(ValueError, match="expected"):
        detector.predict(torch.zeros(1, 3, 32, 32))
    nan_batch = torch.zeros(3, 3, 64, 64)
    nan_batch[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(images \[1\]"):
        detector.predict(nan_batch)


def test_predict_files_writes_rows_and_skips_unreadable_files(tiny_run, tmp_path):
    tiny_data, run = tiny_run
    broken = tmp_path / "inputs" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    inputs = [str(tiny_data / "nut" / "test"), str(tiny_data / "wood" / "test" / "*" / "00[01].png"),
              str(broken), str(tmp_path / "nowhere.png")]
    summary = predict_files(ssmad.load(run, "cpu"), inputs, tmp_path / "out", batch_size=4)
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert rows == summary.rows and len(rows) >= 7
    assert {row["class"] for row in rows} == {"nut", "wood"}
    assert all(row["decision"] == ("anomalous" if row["score"] >= row["threshold"] else "normal") for row in rows)
    assert all((tmp_path / "out" / "overlays" / row["overlay"]).is_file() for row in rows)
    csv_lines = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    header = "path,class,class_source,inferred_class,class_confidence,score,normalized,threshold,decision,geometry,warnings,pixel_threshold,regions,largest_region_px,largest_region_fraction,overlay,mask"
    assert csv_lines[0] == header and len(csv_lines) == len(rows) + 1
    skipped = (tmp_path / "out" / "skipped.csv").read_text()
    assert "broken.png" in skipped and "nowhere.png" in skipped


@pytest.mark.slow
def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    trainer = Trainer(tiny_config(tiny_data, tmp_path, epochs=3))
    loss = trainer.model.loss

    def nan_in_second_epoch(enc, dec):
        value = loss(enc, dec)
        return value * float("nan") if trainer.epoch == 1 else value

    trainer.model.loss = nan_in_second_epoch
    with pytest.raises(TrainingDiverged, match="not finite .* epoch 2, step 1.*--lr"):
        trainer.fit()
    kept = load_checkpoint(tmp_path)
    assert kept["progress"]["epoch"] == 1 and not kept["progress"]["finished"]
    assert all(torch.isfinite(v).all() for v in kept["trainable_state"].values() if v.is_floating_point())

"""A run with a region of interest: trained on the crops, its maps placed into the full image (0 outside,
the crop's own map inside), stored in the checkpoint and the export, applied by ``ssmad.load``."""

import json

import numpy as np
import pytest
from engine_tiny import make_tiny_data, tiny_config
from PIL import Image

import ssmad
import ssmad.export
from ssmad.cli import main
from ssmad.data.geometry import Geometry
from ssmad.data.roi import Roi
from ssmad.engine.checkpoint import load_checkpoint
from ssmad.engine.detector import Detector
from ssmad.engine.trainer import Trainer

NUT_ROI = Roi(16, 0, 48, 64)  # the middle half of the 64 x 64 nut images


@pytest.fixture(scope="module")
def roi_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("roi_run")
    data = make_tiny_data(root / "data")
    config = tiny_config(data, root / "run", image_size="long:64", roi=[f"nut={NUT_ROI}"], epochs=1, batch_size=2)
    trainer = Trainer(config)
    trainer.fit()
    return data, root / "run", trainer


def nut_test_image(data):
    return sorted((data / "nut" / "test").rglob("*.png"))[-1]


def test_the_run_trains_on_the_crops_and_the_checkpoint_keeps_the_box(roi_run):
    _, run, trainer = roi_run
    assert trainer.train_set.rois == trainer.val_set.rois == {"nut": NUT_ROI}
    payload = load_checkpoint(run)
    assert payload["rois"] == {"nut": [16, 0, 48, 64]} and payload["train_config"]["roi"] == ["nut=16,0,48,64"]
    assert payload["geometries"] == {"nut": [64, 32], "wood": [64, 64]}  # long:64 of the box's 1:2
    assert ssmad.load(run, device="cpu").rois == {"nut": NUT_ROI}


def test_the_map_is_zero_outside_the_box_and_the_crop_map_inside(roi_run):
    data, run, _ = roi_run
    detector = ssmad.load(run, device="cpu")
    path = nut_test_image(data)
    result = detector.predict(path)
    full = result.maps[0]
    assert full.shape == (64, 64) and result.heatmaps[0].shape == (64, 64) and result.geometries == ["64x32"]
    outside = np.ones((64, 64), bool)
    outside[0:64, 16:48] = False
    assert np.all(full[outside] == 0)
    no_roi = Detector(detector.engine, detector.calibration, detector.class_names, detector.geometries,
                      detector.mean, detector.std)
    cropped = no_roi.predict(ssmad.data.read_image(path).crop((16, 0, 48, 64)), class_name="nut")
    np.testing.assert_array_equal(full[:, 16:48], cropped.maps[0])  # resized from 64x32 to the box's 64x32
    assert result.scores[0] == cropped.scores[0] and result.warnings == [[]]
    assert full[:, 16:48].min() > 0
    whole = Image.open(path).convert("RGB")
    wood = detector.predict(whole, class_name="wood")  # a class without box: scored whole
    assert wood.geometries == ["64x64"] and wood.maps[0].shape == (64, 64)
    unknown = detector.predict(Image.new("RGB", (30, 60), (100, 90, 80)))  # no class: no box, nearest geometry
    assert unknown.geometries == ["64x32"] and unknown.maps[0].shape == (60, 30)


def test_an_image_smaller_than_the_box_is_an_error_naming_it(roi_run, tmp_path):
    _, run, _ = roi_run
    small = tmp_path / "nut" / "small.png"
    small.parent.mkdir()
    Image.new("RGB", (40, 64)).save(small)
    with pytest.raises(ValueError, match=r"small\.png is 40x64 \(W x H\) but its region of interest 16,0,48,64"):
        ssmad.load(run, device="cpu").predict(small)


def test_test_reports_the_box_and_places_maps_at_the_original_resolution(roi_run, tmp_path):
    data, run, _ = roi_run
    out = tmp_path / "report"
    assert main(["test", str(run), "--out", str(out), "--overlays", "1", "--device", "cpu"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["rois"] == {"nut": "16,0,48,64"} and report["images_resized_with_another_aspect_ratio"] == 0
    assert Image.open(next((out / "overlays" / "nut").glob("*.png"))).size == (3 * 64, 64)  # the full image
    model = tmp_path / "model"
    assert main(["test", str(run), "--out", str(model), "--overlays", "1", "--mask-resolution", "model", "--device", "cpu"]) == 0
    assert Image.open(next((model / "overlays" / "nut").glob("*.png"))).size == (3 * 32, 64)  # the box at 64x32
    at_model = json.loads((model / "metrics.json").read_text())
    assert at_model["metrics"]["nut"]["i_auroc"] == pytest.approx(report["metrics"]["nut"]["i_auroc"])


def test_the_onnx_export_carries_the_box_and_gives_the_same_maps(roi_run, tmp_path):
    pytest.importorskip("onnxruntime")
    data, run, _ = roi_run
    first = ssmad.export.export_onnx(run, tmp_path / "model.onnx")
    exported = ssmad.load(first, device="cpu")
    assert exported.rois == {"nut": NUT_ROI} and exported.geometries["nut"] == Geometry(64, 32)
    images = [nut_test_image(data), sorted((data / "wood" / "test").rglob("*.png"))[-1]]
    expected, result = ssmad.load(run, device="cpu").predict(images), exported.predict(images)
    for got, want in zip(result.maps, expected.maps):
        assert got.shape == want.shape == (64, 64)
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert np.all(result.maps[0][:, :16] == 0) and np.all(result.maps[0][:, 48:] == 0)
    np.testing.assert_allclose(result.scores, expected.scores, rtol=1e-4)


def test_recalibrating_crops_the_normals_as_training_did(roi_run, tmp_path):
    import shutil

    from ssmad.engine.calibrate_on_normals import calibrate_run

    _, run, _ = roi_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("feature_cache"))
    stored = ssmad.load(copy, device="cpu").calibration
    again = calibrate_run(copy, device="cpu")
    for name in ("nut", "wood"):
        assert again.for_class(name).threshold == pytest.approx(stored.for_class(name).threshold, rel=1e-5)


def test_the_service_applies_the_box_and_refuses_an_image_without_it(roi_run):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import io

    from fastapi.testclient import TestClient

    from ssmad.serve import ServeSettings, create_app

    data, run, _ = roi_run
    detector = ssmad.load(run, device="cpu")
    path = nut_test_image(data)
    with TestClient(create_app(detector, ServeSettings(max_batch=2))) as client:
        for _ in range(600):
            if client.get("/healthz").status_code == 200:
                break
        assert client.get("/v1/model").json()["rois"] == {"nut": "16,0,48,64"}
        reply = client.post("/v1/predict", files={"image": (path.name, path.read_bytes(), "image/png")}, data={"class": "nut"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["results"][0]["score"] == pytest.approx(float(detector.predict(path).scores[0]), rel=1e-5)
        small = io.BytesIO()
        Image.new("RGB", (40, 64)).save(small, format="PNG")
        refused = client.post("/v1/predict", files={"image": ("cam.png", small.getvalue(), "image/png")}, data={"class": "nut"})
        assert refused.status_code == 400
        assert "'cam.png' (image 1 of the request) is 40x64 (W x H) but its region of interest 16,0,48,64" in refused.json()["detail"]


def test_a_resumed_run_crops_with_its_stored_boxes(tmp_path):
    from ssmad.engine.trainer import resume_config

    data = make_tiny_data(tmp_path / "data")
    config = tiny_config(data, tmp_path / "run", roi=[f"nut={NUT_ROI}"], epochs=2, batch_size=2, max_steps=1)
    assert not Trainer(config).fit().finished
    resumed = Trainer(resume_config(tmp_path / "run", device="cpu", max_steps=None), resume=True)
    assert resumed.train_set.rois == resumed.val_set.rois == {"nut": NUT_ROI}


def test_the_command_line_refuses_a_box_for_a_class_the_data_lacks(tmp_path, capsys):
    from engine_tiny import tiny_cli_args

    data = make_tiny_data(tmp_path / "data")
    assert main([*tiny_cli_args(data, tmp_path / "run"), "--roi", "bolt=0,0,8,8"]) == 2
    assert "--roi bolt=0,0,8,8: the data has no class 'bolt'; its classes are nut, wood" in capsys.readouterr().err


def test_predict_writes_overlays_of_the_whole_image(roi_run, tmp_path):
    data, run, _ = roi_run
    assert main(["predict", str(run), str(nut_test_image(data)), "--class", "nut", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "predictions.jsonl").read_text().splitlines()[0])
    assert row["geometry"] == "64x32" and row["warnings"] == []
    overlay = Image.open(tmp_path / "overlays" / row["overlay"])
    assert overlay.height == 64 and overlay.width % 64 == 0  # panels of the whole 64 x 64 image

"""Schema versions: a run and an export written by ssmad 0.1.0 (checkpoint schema 1, export
metadata format 1; ``tests/data``) and by 0.2.0 before pixel thresholds (checkpoint schema 3,
export metadata format 2) still load and score as they did, with the default pixel rule; newer
ones are refused; added fields are tolerated."""

import json
import lzma
from pathlib import Path

import numpy as np
import pytest
import torch

import ssmad
from ssmad.engine import checkpoint as checkpoint_module
from ssmad.engine.checkpoint import SCHEMA_VERSION, CheckpointError, load_checkpoint
from ssmad.engine.thresholds import Calibration
from ssmad.export.metadata import FORMAT, ExportedModelError, parse_metadata

DATA = Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "v1_expected_scores.json").read_text())


def _unpack(name: str, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(lzma.decompress((DATA / name).read_bytes()))
    return out


def _images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(3, 3, 64, 64)  # what v1_expected_scores.json was computed on


@pytest.fixture
def v1_run(tmp_path) -> Path:
    return _unpack("v1_run_checkpoint.pt.xz", tmp_path / "run" / "checkpoint.pt").parent


def test_a_schema_1_run_loads_migrated_and_scores_as_it_did(v1_run):
    raw = torch.load(v1_run / "checkpoint.pt", weights_only=True)
    assert raw["format_version"] == 1 and "converted_from" in raw and "data_files" not in raw
    payload = load_checkpoint(v1_run)
    assert payload["format_version"] == SCHEMA_VERSION and payload["data_files"] is None
    assert payload["geometries"] == {"nut": [64, 64], "wood": [64, 64]} and payload["size_rule"] == "64"
    assert payload["tile"] is None and "image_size" not in payload and "image_size" not in payload["model_config"]
    detector = ssmad.load(v1_run, "cpu")
    result = detector.predict(_images(), class_name=EXPECTED["class_name"])
    np.testing.assert_allclose(result.scores, EXPECTED["scores"], rtol=1e-5)
    assert result.decisions.tolist() == EXPECTED["decisions"]


def test_a_finished_schema_1_run_drops_its_optimizer_state_and_an_unfinished_one_keeps_it(v1_run, tmp_path):
    raw = torch.load(v1_run / "checkpoint.pt", weights_only=True)
    resume = {"optimizer": {"state": {}, "param_groups": []}, "scaler": {}, "rng": [{"torch": torch.zeros(3)}]}
    for finished in (True, False):
        path = tmp_path / f"finished_{finished}.pt"
        torch.save({**raw, **resume, "progress": {**raw["progress"], "finished": finished}}, path)
        payload = load_checkpoint(path)
        assert all((key in payload) is not finished for key in ("optimizer", "scaler", "rng"))


def test_a_newer_checkpoint_is_refused_naming_the_file_and_the_fix(v1_run, tmp_path):
    raw = torch.load(v1_run / "checkpoint.pt", weights_only=True)
    path = tmp_path / "future.pt"
    torch.save({**raw, "format_version": SCHEMA_VERSION + 1, "ssmad_version": "9.0.0"}, path)
    with pytest.raises(CheckpointError, match=rf"future\.pt is a checkpoint of schema {SCHEMA_VERSION + 1}.*upgrade ssmad"):
        load_checkpoint(path)


def test_every_older_schema_has_a_migration_step():
    assert sorted(checkpoint_module._MIGRATIONS) == list(range(1, SCHEMA_VERSION))


def test_a_saved_checkpoint_is_of_the_current_schema(v1_run):
    checkpoint_module.save_checkpoint(load_checkpoint(v1_run), v1_run / "checkpoint.pt")
    assert torch.load(v1_run / "checkpoint.pt", weights_only=True)["format_version"] == SCHEMA_VERSION


def test_calibration_records_ignore_added_fields_and_name_a_missing_one():
    record = json.loads((DATA / "v1_export_metadata.json").read_text())["calibration"]
    added = {**record, "pixel_threshold": 0.5, "classes": {k: {**v, "pixel_threshold": 0.5} for k, v in record["classes"].items()}}
    added["global"] = {**record["global"], "pixel_threshold": 0.5}
    assert Calibration.from_dict(added) == Calibration.from_dict(record)
    broken = {**record, "global": {k: v for k, v in record["global"].items() if k != "threshold"}}
    with pytest.raises(ValueError, match="without its 'threshold' field"):
        Calibration.from_dict(broken)


def test_format_1_export_metadata_loads_and_newer_is_refused():
    text = (DATA / "v1_export_metadata.json").read_text()
    metadata = parse_metadata(text, "model.onnx")
    assert metadata["class_names"] == ["nut", "wood"] and metadata["geometries"] == {"nut": [64, 64], "wood": [64, 64]}
    assert metadata["format"] == FORMAT and metadata["tile"] is None and "image_size" not in metadata
    with_added = parse_metadata(json.dumps({**json.loads(text), "geometry": {"resize": "stretch"}}), "model.onnx")
    assert with_added["calibration"] == metadata["calibration"]
    with pytest.raises(ExportedModelError, match="model.onnx: ssmad metadata of format 99.*upgrade ssmad"):
        parse_metadata(json.dumps({**json.loads(text), "format": 99}), "model.onnx")
    with pytest.raises(ExportedModelError, match="unknown format"):
        parse_metadata(json.dumps({**json.loads(text), "format": "one"}), "model.onnx")


def test_a_format_1_onnx_export_scores_as_its_run_did(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = _unpack("v1_model.onnx.xz", tmp_path / "model.onnx")
    detector = ssmad.load(model, "cpu")
    result = detector.predict(_images(), class_name=EXPECTED["class_name"])
    np.testing.assert_allclose(result.scores, EXPECTED["scores"], rtol=1e-4)


def test_a_schema_3_run_loads_with_the_image_rule_pixel_thresholds_no_roi_no_budget_and_scores_as_it_did(tmp_path):
    run = _unpack("v3_run_checkpoint.pt.xz", tmp_path / "run" / "checkpoint.pt").parent
    expected = json.loads((DATA / "v3_expected_scores.json").read_text())
    raw = torch.load(run / "checkpoint.pt", weights_only=True)
    assert raw["format_version"] == 3 and "pixel" not in raw["calibration"]["global"]
    assert "rois" not in raw and "budget" not in raw
    migrated = load_checkpoint(run)
    assert migrated["rois"] == {} and migrated["budget"] is None
    calibration = Calibration.from_dict(migrated["calibration"])
    for cal in [*calibration.classes.values(), calibration.overall]:
        assert cal.pixel.rule == "image" and cal.pixel.value == cal.threshold and cal.threshold_rule == "quantile"
    result = ssmad.load(run, "cpu").predict(_images(), class_name=expected["class_name"])
    np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5)
    assert result.decisions.tolist() == expected["decisions"]
    assert result.thresholds.tolist() == expected["thresholds"] == result.pixel_thresholds.tolist()
    assert [bool(regions) for regions in result.regions] == expected["decisions"]


def test_format_2_export_metadata_loads_with_the_image_rule_pixel_thresholds_and_no_roi():
    stored = json.loads((DATA / "v2_export_metadata.json").read_text())
    assert stored["format"] == 2 and "pixel" not in stored["calibration"]["global"]
    metadata = parse_metadata(json.dumps(stored), "model.onnx")
    assert metadata["format"] == FORMAT == 4 and metadata["model_config"]["image_score"] == "max"
    assert "rois" not in stored and metadata["rois"] == {}
    for name, record in [*metadata["calibration"]["classes"].items(), ("global", metadata["calibration"]["global"])]:
        old = stored["calibration"]["classes"].get(name, stored["calibration"]["global"])
        assert record["pixel"]["rule"] == "image" and record["pixel"]["value"] == old["threshold"]
        assert record["threshold_rule"] == "quantile" and record["threshold"] == old["threshold"]


def test_a_schema_4_run_keeps_the_maximum_as_image_score_has_no_prototypes_and_scores_as_it_did(tmp_path):
    run = _unpack("v4_run_checkpoint.pt.xz", tmp_path / "run" / "checkpoint.pt").parent
    expected = json.loads((DATA / "v4_expected_scores.json").read_text())
    raw = torch.load(run / "checkpoint.pt", weights_only=True)
    assert raw["format_version"] == 4 and "image_score" not in raw["model_config"]
    assert "prototypes" not in raw["calibration"]
    migrated = load_checkpoint(run)
    assert migrated["model_config"]["image_score"] == "max"
    detector = ssmad.load(run, "cpu")
    assert "no class prototypes" in detector.class_inference_unavailable()
    result = detector.predict(_images(), class_name=expected["class_name"])
    np.testing.assert_allclose(result.scores, expected["scores"], rtol=1e-5)
    assert result.decisions.tolist() == expected["decisions"]
    assert result.thresholds.tolist() == expected["thresholds"]
    unlabelled = detector.predict(_images())  # two classes and no folder: the global threshold, saying why
    assert unlabelled.class_sources == ["global"] * 3
    assert all("no class prototypes" in " ".join(notes) for notes in unlabelled.warnings)


def test_format_3_export_metadata_loads_with_the_maximum_as_image_score_and_no_prototypes():
    stored = json.loads((DATA / "v3_export_metadata.json").read_text())
    assert stored["format"] == 3 and "image_score" not in stored["model_config"]
    metadata = parse_metadata(json.dumps(stored), "model.onnx")
    assert metadata["format"] == FORMAT == 4 and metadata["model_config"]["image_score"] == "max"
    assert Calibration.from_dict(metadata["calibration"]).prototypes == {}
    assert metadata["calibration"]["classes"] == stored["calibration"]["classes"]

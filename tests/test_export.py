"""Export to ONNX (and OpenVINO): a trained tiny run exported by the command line scores real
images (the shared bottle class where present, synthetic otherwise) as its checkpoint does,
through ssmad.load and ssmad predict; metadata round trip; clear errors for bad files."""

import json

import numpy as np
import pytest
import torch
from conftest import MVTEC_ROOT

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import ssmad  # noqa: E402
from ssmad.cli import main  # noqa: E402
from ssmad.data.geometry import Geometry  # noqa: E402
from ssmad.engine.checkpoint import load_checkpoint  # noqa: E402
from ssmad.export import ExportedModelError, load_exported, read_onnx_metadata  # noqa: E402
from ssmad.export.metadata import build_metadata  # noqa: E402


def relative(actual, expected):
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """(data, run, the run exported to ONNX by ``ssmad export``)."""
    onnx_path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    assert main(["export", str(tiny_run.run), "--out", str(onnx_path)]) == 0
    return tiny_run.data, tiny_run.run, onnx_path


@pytest.fixture(scope="module")
def images(exported):
    """Four real bottle test images (two good, two broken) when present, else synthetic ones."""
    bottle = MVTEC_ROOT / "bottle" / "test"
    if bottle.is_dir():
        return [str(p) for kind in ("good", "broken_large") for p in sorted((bottle / kind).glob("*.png"))[:2]]
    return [str(p) for p in sorted((exported[0] / "wood" / "test").rglob("*.png"))[:4]]


def test_onnxruntime_predicts_what_the_checkpoint_predicts(exported, images):
    _, run, onnx_path = exported
    torch_result = ssmad.load(run, device="cpu").predict(images, class_name="wood")
    detector = ssmad.load(onnx_path, device="cpu")
    assert detector.engine.name == "onnxruntime"
    for batch_size in (1, 3):  # the batch axis is dynamic
        result = detector.predict(images, class_name="wood", batch_size=batch_size)
        assert relative(result.maps, torch_result.maps) <= 1e-5
        assert relative(result.scores, torch_result.scores) <= 1e-5
        np.testing.assert_allclose(result.normalized, torch_result.normalized, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(result.heatmaps, torch_result.heatmaps, atol=1e-4)
        assert (result.decisions == torch_result.decisions).all()
        assert result.thresholds.tolist() == torch_result.thresholds.tolist()


def test_onnxruntime_gives_the_masks_and_regions_pytorch_gives(exported, images):
    _, run, onnx_path = exported
    metadata = read_onnx_metadata(onnx_path)
    assert metadata["calibration"]["classes"]["wood"]["pixel"]["rule"] == "image"
    torch_detector, onnx_detector = ssmad.load(run, device="cpu"), ssmad.load(onnx_path, device="cpu")
    low = float(np.quantile(np.concatenate([m.ravel() for m in torch_detector.predict(images, class_name="wood").maps]), 0.9))
    for pixel_threshold in (None, low):  # the calibrated one (small masks), and one that marks a tenth of the pixels
        torch_detector.set_pixel_decision(pixel_threshold, 2)
        onnx_detector.set_pixel_decision(pixel_threshold, 2)
        expected = torch_detector.predict(images, class_name="wood")
        result = onnx_detector.predict(images, class_name="wood")
        assert result.pixel_thresholds.tolist() == expected.pixel_thresholds.tolist()
        for mask, torch_mask in zip(result.masks, expected.masks):
            np.testing.assert_array_equal(mask, torch_mask)
        assert [[r.box for r in regions] for regions in result.regions] == [[r.box for r in regions] for regions in expected.regions]


def test_tensors_are_taken_normalised_as_by_the_checkpoint_detector(exported, images):
    _, run, onnx_path = exported
    torch_detector, onnx_detector = ssmad.load(run, device="cpu"), ssmad.load(onnx_path, device="cpu")
    from ssmad.data import read_image

    tensors = torch.stack([torch_detector.transforms[Geometry(64, 64)](read_image(p)) for p in images[:2]])
    expected = torch_detector.predict(tensors)
    assert relative(onnx_detector.predict(tensors).maps, expected.maps) <= 1e-5


def test_graph_outputs_the_raw_map_and_score_of_rgb_in_zero_one(exported):
    import onnx
    import onnxruntime as ort

    _, _, onnx_path = exported
    model = onnx.load(str(onnx_path))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["anomaly_map", "score", "embedding"]
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("RoutedScan") == 4 and "Loop" not in ops  # one scan per SS2D layer (depths 1, 1, 1, 1)
    [function] = model.functions  # the scan's body: standard operators, one Scan over blocks of steps
    assert [node.op_type for node in function.node].count("Scan") == 1
    assert {entry.domain for entry in function.opset_import} <= {"", "ai.onnx"}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    maps, scores, embeddings = session.run(None, {"image": np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)})
    assert maps.shape == (2, 64, 64) and scores.shape == (2,) and embeddings.shape[0] == 2
    top = np.sort(maps.reshape(2, -1), axis=1)[:, -41:]  # the top 1 % of 64 x 64 pixels: 41
    np.testing.assert_allclose(scores, top.mean(1), rtol=1e-5)


def test_metadata_round_trip(exported):
    _, run, onnx_path = exported
    payload = load_checkpoint(run)
    metadata = read_onnx_metadata(onnx_path)
    assert metadata == {**json.loads(json.dumps(build_metadata(payload))), "graphs": {"64x64": onnx_path.name}}
    assert metadata["preset"] == "pyramid_mamba" and metadata["geometries"] == {"nut": [64, 64], "wood": [64, 64]}
    assert metadata["ssmad_version"] == ssmad.__version__ and metadata["class_names"] == ["nut", "wood"]
    detector = load_exported(onnx_path, device="cpu")
    assert detector.calibration.to_dict() == payload["calibration"]


def test_predict_command_runs_an_exported_model(exported, tmp_path, capsys):
    data, _, onnx_path = exported
    assert main(["predict", str(onnx_path), str(data / "nut" / "test"), "--out", str(tmp_path), "--no-overlays"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(row["class"] == "nut" for row in rows)


def test_bad_files_give_a_clear_error(tmp_path, capsys):
    import onnx

    with pytest.raises(ExportedModelError, match="no exported model"):
        ssmad.load(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not a protobuf \xff" * 10)
    with pytest.raises(ExportedModelError, match="not a readable ONNX model"):
        ssmad.load(garbage)
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", 1, [1])], [value("y", 1, [1])])
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(ExportedModelError, match="not a model written by 'ssmad export'"):
        ssmad.load(foreign)
    assert main(["predict", str(foreign), str(tmp_path)]) == 2
    assert "not a model written by 'ssmad export'" in capsys.readouterr().err


def test_a_missing_extra_is_named(monkeypatch):
    import importlib

    from ssmad.export.requirements import require

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name)) if name == "onnxruntime" else real(name))
    with pytest.raises(ImportError, match=r"pip install 'ssmad\[export\]'"):
        require("onnxruntime")


def test_openvino_runs_the_exported_model(exported, images, tmp_path):
    pytest.importorskip("openvino")
    from ssmad.export import export_openvino

    _, run, onnx_path = exported
    xml = export_openvino(onnx_path, tmp_path / "tiny.xml")
    detector = ssmad.load(xml)
    assert detector.engine.name == "openvino"
    expected = ssmad.load(run, device="cpu").predict(images, class_name="wood")
    result = detector.predict(images, class_name="wood", batch_size=2)
    assert relative(result.maps, expected.maps) <= 1e-5
    assert (result.decisions == expected.decisions).all()
    metadata = detector_metadata(xml)
    library = metadata.pop("openvino_extension")
    assert metadata.pop("graphs") == {"64x64": "tiny.xml"}
    assert {k: v for k, v in read_onnx_metadata(onnx_path).items() if k != "graphs"} == metadata
    assert (library is not None) == (xml.with_name("libssmad_openvino.so").is_file() and "RoutedScan" in xml.read_text())


def detector_metadata(xml):
    from ssmad.export.loading import read_openvino, read_openvino_metadata

    return read_openvino_metadata(read_openvino(xml)[1], str(xml))


def test_readme_example_reproduces_score_and_decision(exported, images, capsys):
    """The numpy + Pillow + onnxruntime example, run as written on the tiny export."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    code = text.split("Without ssmad or PyTorch", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    _, run, onnx_path = exported
    code = code.replace('"model.onnx"', repr(str(onnx_path))).replace('"bottle/test/broken_large/000.png"', repr(images[-1]))
    exec(code.replace('["classes"]["bottle"]', '["classes"]["wood"]').replace('["geometries"]["bottle"]', '["geometries"]["wood"]'), {})
    score, normalized, decision = capsys.readouterr().out.split()
    expected = ssmad.load(run, device="cpu").predict(images[-1], class_name="wood")
    assert abs(float(score) - expected.scores[0]) <= 1e-5 * abs(expected.scores[0])
    assert abs(float(normalized) - expected.normalized[0]) <= 1e-4
    assert decision == ("anomalous" if expected.decisions[0] else "normal")


def test_ssmad_test_evaluates_an_exported_model_as_its_run(exported, tmp_path):
    data, run, onnx_path = exported
    assert main(["test", str(onnx_path), "--out", str(tmp_path / "onnx")]) == 2  # no data root recorded
    assert main(["test", str(onnx_path), "--data", str(data), "--out", str(tmp_path / "onnx"), "--overlays", "0"]) == 0
    assert main(["test", str(run), "--out", str(tmp_path / "torch"), "--overlays", "0"]) == 0
    exported_metrics = json.loads((tmp_path / "onnx" / "metrics.json").read_text())
    torch_metrics = json.loads((tmp_path / "torch" / "metrics.json").read_text())
    assert exported_metrics["metrics"].keys() == torch_metrics["metrics"].keys() == {"nut", "wood", "mean"}
    for name, values in torch_metrics["metrics"].items():
        for metric, value in values.items():
            assert exported_metrics["metrics"][name][metric] == pytest.approx(value, abs=1e-4), (name, metric)
    assert_close(exported_metrics["decision"], torch_metrics["decision"])


def assert_close(actual, expected, path="decision"):
    """Equal structure and values: floats (metrics of maps that differ by float rounding) to 1e-4."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), path
        for key in expected:
            assert_close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-4, nan_ok=True), path
    else:
        assert actual == expected, path


def test_int8_export_quantises_and_recalibrates_on_the_quantised_model(exported, images, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from ssmad.engine.calibrate_on_normals import calibration_dataset
    from ssmad.engine.checkpoint import model_from_checkpoint, stored_geometries
    from ssmad.engine.thresholds import calibrate
    from ssmad.export import export_openvino

    data, run, onnx_path = exported
    xml = tmp_path / "int8.xml"
    assert main(["export", str(run), "--format", "openvino", "--int8", "--out", str(xml)]) == 0
    fp32 = export_openvino(onnx_path, tmp_path / "fp32.xml")
    assert xml.with_suffix(".bin").stat().st_size < 0.5 * fp32.with_suffix(".bin").stat().st_size
    detector = ssmad.load(xml)
    metadata = detector_metadata(xml)
    assert metadata["int8"] is True
    expected = ssmad.load(fp32).predict(images, class_name="wood")
    result = detector.predict(images, class_name="wood")
    assert relative(result.maps, expected.maps) <= 0.1  # 8-bit weights and activations: close, not equal
    # the thresholds are the quantised model's own on the run's calibration normals
    payload = load_checkpoint(run)
    normals = calibration_dataset(model_from_checkpoint(payload), data, stored_geometries(payload), "mvtec",
                                  list(payload["class_names"]),
                                  payload["train_config"]["val_fraction"], payload["train_config"]["seed"])
    batch = torch.stack([normals[i]["image"] for i in range(len(normals))])
    maps, scores = detector.engine(batch)
    own = calibrate([s.class_name for s in normals.samples], scores, maps, payload["calibration"]["target_fpr"])
    stored = metadata["calibration"]["classes"]
    for name, values in own.to_dict()["classes"].items():
        assert stored[name]["threshold"] == pytest.approx(values["threshold"], rel=1e-5)


def test_int8_without_nncf_names_the_extra(exported, monkeypatch, tmp_path):
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name)) if name == "nncf" else real(name))
    _, run, onnx_path = exported
    from ssmad.export.int8 import quantize_openvino

    with pytest.raises(ImportError, match=r"pip install 'ssmad\[int8\]'"):
        quantize_openvino(run, onnx_path, tmp_path / "int8.xml")

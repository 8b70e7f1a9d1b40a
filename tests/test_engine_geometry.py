"""One model over classes of different geometries: batches per geometry, stored geometries, maps at
each image's original size, the nearest geometry for an image of no known class, tiles."""

from pathlib import Path

import numpy as np
import pytest
from engine_tiny import make_tiny_data, tiny_config
from PIL import Image

import ssmad
import ssmad.export
from ssmad.cli import main
from ssmad.data.geometry import Geometry
from ssmad.engine.checkpoint import load_checkpoint
from ssmad.engine.detector import Detector
from ssmad.engine.rng import epoch_batches, epoch_order
from ssmad.engine.tiling import TileSettings
from ssmad.engine.trainer import Trainer


def stretch_class(root: Path, name: str, size_wh: tuple[int, int]) -> None:
    """Resize every image and mask of class ``name`` to ``size_wh`` (a non-square product)."""
    for path in (root / name).rglob("*.png"):
        image = Image.open(path)
        resample = Image.NEAREST if "ground_truth" in path.parts else Image.BILINEAR
        image.resize(size_wh, resample).save(path)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """wood stays 64 x 64, nut becomes tall (32 wide, 64 high): long:64 gives 64x64 and 64x32."""
    root = tmp_path_factory.mktemp("mixed")
    data = make_tiny_data(root / "data")
    stretch_class(data, "nut", (32, 64))
    config = tiny_config(data, root / "run", image_size="long:64", epochs=1, batch_size=2)
    Trainer(config).fit()
    return data, root / "run"


def test_epoch_batches_of_one_geometry_are_the_old_order_and_several_never_mix():
    order = epoch_order(3, 2, 10)
    assert [b.tolist() for b in epoch_batches(3, 2, [list(range(10))], 4)] == [order[:4].tolist(), order[4:8].tolist()]
    groups = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11]]
    batches = epoch_batches(0, 0, groups, 2)
    assert len(batches) == 2 + 3
    assert all(set(b.tolist()) <= set(groups[0]) or set(b.tolist()) <= set(groups[1]) for b in batches)
    assert [b.tolist() for b in batches] == [b.tolist() for b in epoch_batches(0, 0, groups, 2)]  # seeded
    assert [b.tolist() for b in batches] != [b.tolist() for b in epoch_batches(0, 1, groups, 2)]


def test_classes_train_at_their_own_geometry_and_the_checkpoint_keeps_it(mixed_run):
    _, run = mixed_run
    payload = load_checkpoint(run)
    assert payload["geometries"] == {"nut": [64, 32], "wood": [64, 64]} and payload["size_rule"] == "long:64"
    log = (run / "train.log").read_text()
    assert "nut (64x32)" in log and "wood (64x64)" in log


def test_maps_come_at_each_image_original_size(mixed_run):
    data, run = mixed_run
    detector = ssmad.load(run, device="cpu")
    nut = sorted((data / "nut" / "test").rglob("*.png"))[0]
    wood = sorted((data / "wood" / "test").rglob("*.png"))[0]
    result = detector.predict([nut, wood])
    assert [m.shape for m in result.maps] == [(64, 32), (64, 64)]
    assert [h.shape for h in result.heatmaps] == [(64, 32), (64, 64)]
    assert result.geometries == ["64x32", "64x64"] and result.warnings == [[], []]
    # the score is the maximum of the map at the model's resolution, whatever the original size
    at_model = detector.predict(detector.transforms[Geometry(64, 32)](ssmad.data.read_image(nut))[None])
    np.testing.assert_allclose(result.scores[0], at_model.scores[0], rtol=1e-5)
    big = Image.open(nut).resize((96, 192))
    assert detector.predict(big, class_name="nut").maps[0].shape == (192, 96)  # the map of a 4.5x larger photo


def test_an_image_of_no_known_class_takes_the_nearest_geometry_and_says_so(mixed_run):
    _, run = mixed_run
    detector = ssmad.load(run, device="cpu")
    tall = Image.new("RGB", (40, 100), (120, 90, 60))
    result = detector.predict(tall)
    assert result.calibration_classes == [None] and result.geometries == ["64x32"]
    assert any("geometry of 'nut', nearest its aspect ratio" in note for note in result.warnings[0])
    squashed = detector.predict(Image.new("RGB", (200, 50)), class_name="wood")
    assert any("resized from 200x50" in note for note in squashed.warnings[0])
    assert squashed.image(0).record()["warnings"] == squashed.warnings[0]


def test_test_reports_pixel_metrics_at_the_original_resolution(mixed_run, tmp_path):
    data, run = mixed_run
    out = tmp_path / "original"
    assert main(["test", str(run), "--out", str(out), "--overlays", "1", "--device", "cpu"]) == 0
    report = __import__("json").loads((out / "metrics.json").read_text())
    assert report["mask_resolution"] == "original" and report["geometries"] == {"nut": "64x32", "wood": "64x64"}
    overlay = next((out / "overlays" / "nut").glob("*.png"))
    assert Image.open(overlay).size == (3 * 32, 64)  # image | mask | heatmap at the nut's own 32 x 64
    model = tmp_path / "model"
    assert main(["test", str(run), "--out", str(model), "--overlays", "0", "--mask-resolution", "model", "--device", "cpu"]) == 0
    at_model = __import__("json").loads((model / "metrics.json").read_text())
    assert at_model["mask_resolution"] == "model"
    for name in ("nut", "wood"):  # image metrics do not depend on the mask resolution
        assert at_model["metrics"][name]["i_auroc"] == pytest.approx(report["metrics"][name]["i_auroc"])


def test_tiles_score_an_image_larger_than_the_tile(mixed_run):
    """The nut class brought to 128x64 and scored in 64-pixel tiles overlapping by 32: three tiles,
    whose blended map is the image's, at its original size, and whose maximum is the score."""
    data, run = mixed_run
    loaded = ssmad.load(run, device="cpu")
    geometries = {"nut": Geometry(128, 64), "wood": Geometry(64, 64)}
    whole = Detector(loaded.engine, loaded.calibration, loaded.class_names, geometries, loaded.mean, loaded.std)
    tiled = Detector(loaded.engine, loaded.calibration, loaded.class_names, geometries, loaded.mean, loaded.std,
                     tile=TileSettings(64, 32))
    nut = sorted((data / "nut" / "test").rglob("*.png"))[0]
    calls = []
    engine = tiled.engine
    tiled.engine = lambda batch: calls.append(tuple(batch.shape)) or engine(batch)
    result = tiled.predict(nut)
    assert calls == [(3, 3, 64, 64)]  # the three tiles in one batch
    assert result.maps[0].shape == whole.predict(nut).maps[0].shape == (64, 32)
    at_geometry = tiled.score_images(tiled.transforms[Geometry(128, 64)](ssmad.data.read_image(nut))[None], 4)
    stitched = at_geometry[0][0].ravel()
    top_percent = np.sort(stitched)[-round(0.01 * stitched.size):].mean()  # the default image score of the stitched map
    assert at_geometry[0][0].shape == (128, 64) and result.scores[0] == pytest.approx(float(top_percent), rel=1e-5)


def test_a_tiled_run_trains_on_the_tiles_and_scores_in_tiles(tmp_path):
    """128 x 128 images in 64-pixel tiles: four training items per image, the tile stored, and the
    calibration made on whole images scored in tiles (every threshold a stitched map's image score)."""
    data = make_tiny_data(tmp_path / "data")
    for name in ("wood", "nut"):
        stretch_class(data, name, (128, 128))
    config = tiny_config(data, tmp_path / "run", image_size="128", tile=64, tile_overlap=0, epochs=1)
    trainer = Trainer(config)
    assert len(trainer.train_items) == 4 * len(trainer.train_set)
    assert {trainer.train_items.geometry(i) for i in range(len(trainer.train_items))} == {Geometry(64, 64)}
    assert trainer.train_items[1]["image"].shape == (3, 64, 64)
    torch_equal = trainer.train_items[1]["image"].equal(trainer.train_set[0]["image"][:, :64, 64:])
    assert torch_equal  # the second tile of the first image is its top-right quarter
    trainer.fit()
    payload = load_checkpoint(tmp_path / "run")
    assert payload["tile"] == {"size": 64, "overlap": 0} and payload["geometries"]["wood"] == [128, 128]
    detector = ssmad.load(tmp_path / "run", device="cpu")
    normals = trainer.val_set
    result = detector.predict([s.path for s in normals.samples])
    for name, score in zip(result.calibration_classes, result.scores):
        assert name in ("wood", "nut")
    threshold = max(result.scores[[c == "wood" for c in result.calibration_classes]])
    assert detector.calibration.for_class("wood").threshold == pytest.approx(threshold, rel=1e-4)


def test_random_tile_crops_are_cut_anywhere_drawn_per_epoch_and_train_uncached(tmp_path):
    """--tile-crops random: each item is a 64 x 64 crop of its image at a position drawn from the
    seed, the epoch and the item (inside the image, the same on a second draw, another next epoch);
    the run trains with the encoder on every step and stores the same tile settings."""
    data = make_tiny_data(tmp_path / "data")
    for name in ("wood", "nut"):
        stretch_class(data, name, (96, 128))
    config = tiny_config(data, tmp_path / "run", image_size="96x128", tile=64, tile_crops="random", epochs=2)
    trainer = Trainer(config)
    items = trainer.train_items
    positions = [items.crop_position(i) for i in range(len(items))]
    assert len(set(positions)) > len(positions) // 2  # not the grid's few positions
    for index, (top, left) in enumerate(positions[:8]):
        assert 0 <= top <= 96 - 64 and 0 <= left <= 128 - 64
        whole = trainer.train_set[items.tiles[index].index]["image"]
        assert items[index]["image"].equal(whole[:, top:top + 64, left:left + 64])
    assert positions == [items.crop_position(i) for i in range(len(items))]
    items.set_epoch(1)
    assert positions != [items.crop_position(i) for i in range(len(items))]
    result = trainer.fit()
    assert result.finished
    log = (tmp_path / "run" / "train.log").read_text()
    assert "random crops (encoder every step, not cached)" in log and "train not cached" in log
    assert load_checkpoint(tmp_path / "run")["tile"] == {"size": 64, "overlap": 0}


def test_a_run_of_two_geometries_exports_one_graph_each_and_loads_as_one_detector(mixed_run, tmp_path):
    pytest.importorskip("onnxruntime")
    data, run = mixed_run
    first = ssmad.export.export_onnx(run, tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["model_64x32.onnx", "model_64x64.onnx"]
    exported = ssmad.load(first, device="cpu")
    torch_detector = ssmad.load(run, device="cpu")
    images = [sorted((data / name / "test").rglob("*.png"))[-1] for name in ("nut", "wood")]
    expected, result = torch_detector.predict(images), exported.predict(images)
    for got, want in zip(result.maps, expected.maps):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    np.testing.assert_allclose(result.scores, expected.scores, rtol=1e-4)
    assert result.decisions.tolist() == expected.decisions.tolist()
    assert ssmad.load(tmp_path / "model_64x64.onnx", device="cpu").geometries == torch_detector.geometries


def test_the_service_scores_an_image_of_each_geometry_at_its_original_size(mixed_run):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import base64
    import io

    from fastapi.testclient import TestClient

    from ssmad.serve import ServeSettings, create_app

    data, run = mixed_run
    detector = ssmad.load(run, device="cpu")
    with TestClient(create_app(detector, ServeSettings(max_batch=2))) as client:
        for _ in range(600):
            if client.get("/healthz").status_code == 200:
                break
        assert client.get("/v1/model").json()["input_sizes"] == {"nut": "64x32", "wood": "64x64"}
        for name, size in (("nut", (32, 64)), ("wood", (64, 64))):
            path = sorted((data / name / "test").rglob("*.png"))[-1]
            reply = client.post("/v1/predict", files={"image": (path.name, path.read_bytes(), "image/png")},
                                data={"class": name})
            assert reply.status_code == 200, reply.text
            record = reply.json()["results"][0]
            assert record["class"] == name and record["geometry"] == str(detector.geometries[name])
            overlay = Image.open(io.BytesIO(base64.b64decode(record["overlay_png"])))
            assert overlay.size[1] == size[1]  # drawn over the image at its own height


def test_a_run_of_two_geometries_quantises_each_graph_and_calibrates_them_as_one(mixed_run, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import torch

    from ssmad.engine.calibrate_on_normals import calibration_dataset
    from ssmad.engine.checkpoint import model_from_checkpoint, stored_geometries
    from ssmad.engine.thresholds import calibrate
    from ssmad.export.loading import read_openvino, read_openvino_metadata

    data, run = mixed_run
    assert main(["export", str(run), "--format", "openvino", "--int8", "--out", str(tmp_path / "model-int8.xml")]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.xml")) == ["model-int8_64x32.xml", "model-int8_64x64.xml"]
    first = tmp_path / "model-int8_64x32.xml"
    metadata = read_openvino_metadata(read_openvino(first)[1], str(first))
    assert metadata["int8"] is True and metadata["graphs"] == {"64x32": first.name, "64x64": "model-int8_64x64.xml"}
    detector, torch_detector = ssmad.load(first, device="cpu"), ssmad.load(run, device="cpu")
    images = [sorted((data / name / "test").rglob("*.png"))[-1] for name in ("nut", "wood")]
    expected, result = torch_detector.predict(images), detector.predict(images)
    for got, want in zip(result.maps, expected.maps):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 0.1 * np.abs(want).max()  # 8-bit weights and activations: close, not equal
    # one calibration over both geometries, from the quantised graphs' own scores of the calibration normals
    payload = load_checkpoint(run)
    normals = calibration_dataset(model_from_checkpoint(payload), data, stored_geometries(payload), "mvtec",
                                  list(payload["class_names"]),
                                  payload["train_config"]["val_fraction"], payload["train_config"]["seed"])
    names, maps, scores = [], [], []
    for name in payload["class_names"]:
        chosen = [i for i, sample in enumerate(normals.samples) if sample.class_name == name]
        class_maps, class_scores = detector.engine(torch.stack([normals[i]["image"] for i in chosen]))
        names += [name] * len(chosen)
        maps += list(class_maps)
        scores += list(class_scores)
    own = calibrate(names, np.array(scores), maps, payload["calibration"]["target_fpr"])
    for name, values in own.to_dict()["classes"].items():
        assert metadata["calibration"]["classes"][name]["threshold"] == pytest.approx(values["threshold"], rel=1e-5)

"""MVTec AD 2: its layout read from a miniature tree, and predictions written in the server's form."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mvtec2_tiny import DEFECT_BOX, TINY_CLASSES, make_mvtec2_tree
from ssmad.data import build_dataset, detect_kind, read_mask
from ssmad.data.layouts import MVTEC2_SPLITS, UNKNOWN_LABEL, read_mvtec2_class, resolve_classes
from ssmad.engine.mvtec2_submission import submission_paths, write_submission_image


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_mvtec2_tree(tmp_path_factory.mktemp("mvtec_ad_2"))


def test_every_split_is_read_as_distributed(tree):
    assert detect_kind(tree) == "mvtec2" and detect_kind(tree / "can") == "mvtec2"
    assert resolve_classes("mvtec2", tree) == {"can": tree / "can", "vial": tree / "vial"}
    splits = read_mvtec2_class(tree / "can", "can")
    counts = {name: len(splits.split(name)) for name in MVTEC2_SPLITS}
    assert counts == {"train": 6, "validation": 3, "test_public": 4, "test_private": 3, "test_private_mixed": 3}
    assert all(s.label == 0 and s.mask_path is None for s in splits.train + splits.validation)
    assert {s.path.parent.name for s in splits.validation} == {"good"}
    bad = [s for s in splits.test_public if s.label == 1]
    assert [s.path.name for s in bad] == ["000_regular.png", "001_overexposed.png"]
    assert [s.mask_path.name for s in bad] == ["000_regular_mask.png", "001_overexposed_mask.png"]
    assert all(s.mask_path.parent == tree / "can" / "test_public" / "ground_truth" / "bad" for s in bad)
    left, top, right, bottom = DEFECT_BOX
    assert read_mask(bad[0].mask_path).sum() == (right - left) * (bottom - top)
    for name in ("test_private", "test_private_mixed"):
        samples = splits.split(name)
        assert all(s.label == UNKNOWN_LABEL and s.mask_path is None and s.defect_type == "unknown" for s in samples)
        assert all(s.path.parent == tree / "can" / name for s in samples)
    with pytest.raises(ValueError, match="unknown MVTec AD 2 split 'test'"):
        splits.split("test")


def test_build_dataset_trains_on_train_and_tests_on_test_public(tree):
    train = build_dataset("auto", tree, "train", image_size=64, val_fraction=0.0)
    assert train.class_names == ["can", "vial"] and len(train) == 12
    assert all("/train/good/" in str(s.path).replace("\\", "/") for s in train.samples)
    test = build_dataset("mvtec2", tree, "test", image_size=64)
    assert len(test) == 8 and sorted(set(test.labels)) == [0, 1]
    assert all("/test_public/" in str(s.path).replace("\\", "/") for s in test.samples)


def test_predictions_are_written_in_the_servers_form(tree, tmp_path):
    pytest.importorskip("tifffile")
    import tifffile

    out = tmp_path / "submission"
    for name, (width, height) in TINY_CLASSES.items():
        for split in ("test_private", "test_private_mixed"):
            for sample in read_mvtec2_class(tree / name, name).split(split):
                values = np.linspace(0.0, 2.0, width * height, dtype=np.float32).reshape(height, width)
                write_submission_image(out, tree, sample.path, values, values >= 1.5)
    map_path, mask_path = submission_paths(out, tree, tree / "vial" / "test_private_mixed" / "000_overexposed.png")
    assert map_path == out / "anomaly_images" / "vial" / "test_private_mixed" / "000_overexposed.tiff"
    assert mask_path == out / "anomaly_images_thresholded" / "vial" / "test_private_mixed" / "000_overexposed.png"
    width, height = TINY_CLASSES["vial"]
    stored = tifffile.imread(map_path)
    assert stored.dtype == np.float16 and stored.shape == (height, width)
    expected = np.linspace(0.0, 2.0, width * height, dtype=np.float32).reshape(height, width)
    np.testing.assert_array_equal(stored, expected.astype(np.float16))
    mask = Image.open(mask_path)
    assert mask.mode == "L" and mask.size == (width, height)
    assert set(np.unique(np.asarray(mask))) == {0, 255}
    np.testing.assert_array_equal(np.asarray(mask) == 255, expected.astype(np.float32) >= 1.5)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*"))
    assert len(written) == 2 * 2 * 2 * 3  # maps and masks, 2 classes, 2 private splits, 3 images
    assert all(p.startswith(("anomaly_images/", "anomaly_images_thresholded/")) for p in written)


def test_writer_refuses_wrong_shapes_and_foreign_paths(tree, tmp_path):
    pytest.importorskip("tifffile")
    image = tree / "can" / "test_private" / "000_regular.png"
    with pytest.raises(ValueError, match="image's resolution"):
        write_submission_image(tmp_path, tree, image, np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="not below the dataset root"):
        submission_paths(tmp_path, tree / "vial", image)

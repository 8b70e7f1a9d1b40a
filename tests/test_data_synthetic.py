"""make_synthetic: MVTec layout, determinism, exact masks, variation of normal images."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from ssmad.data import SYNTHETIC_CLASSES, build_dataset, make_synthetic
from ssmad.data.synthetic import render_sample, sample_seed


def folder_digest(root):
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic(root, classes=list(SYNTHETIC_CLASSES), num_train=4, num_test=9, image_size=96, seed=5)


def test_loads_with_the_mvtec_dataset(synthetic_root):
    test = build_dataset("mvtec", synthetic_root, "test", image_size=64)
    assert test.class_names == sorted(SYNTHETIC_CLASSES)
    assert len(test) == 5 * 9
    assert sum(test.labels) == 5 * 6  # a third good
    assert all(s.mask_path is not None for s in test.samples if s.label == 1)
    for index in (0, len(test) - 1):
        sample = test[index]
        assert sample["image"].shape == (3, 64, 64)
        assert (sample["mask"].sum() > 0) == (sample["label"] == 1)
    assert len(build_dataset("auto", synthetic_root, "train", val_fraction=0.25)) == 5 * 3


def test_masks_are_exactly_the_changed_pixels(synthetic_root):
    for class_name, defects in SYNTHETIC_CLASSES.items():
        for defect in defects:
            for path in sorted((synthetic_root / class_name / "test" / defect).glob("*.png")):
                index = int(path.stem)
                rendered = render_sample(class_name, defect, 96, sample_seed(5, class_name, "test", index))
                written = np.asarray(Image.open(path))
                mask_path = synthetic_root / class_name / "ground_truth" / defect / f"{path.stem}_mask.png"
                mask = np.asarray(Image.open(mask_path)) > 0
                assert np.array_equal(written, rendered.image)
                assert np.array_equal(mask, (rendered.image != rendered.clean).any(axis=-1))
                assert mask.sum() >= 4


def test_defects_are_clearly_visible():
    for class_name, defects in SYNTHETIC_CLASSES.items():
        for defect in defects:
            sample = render_sample(class_name, defect, 128, seed=[1, 2])
            change = np.abs(sample.image.astype(int) - sample.clean.astype(int)).max(axis=-1)
            assert sample.mask.mean() > 0.001, (class_name, defect)
            assert np.median(change[sample.mask]) >= 30, (class_name, defect)


def test_normal_images_vary():
    for class_name in SYNTHETIC_CLASSES:
        first = render_sample(class_name, None, 64, seed=1).image.astype(int)
        second = render_sample(class_name, None, 64, seed=2).image.astype(int)
        assert np.abs(first - second).mean() > 5, class_name


def test_deterministic_for_a_seed(tmp_path):
    first = make_synthetic(tmp_path / "a", classes=["grid"], num_train=2, num_test=3, image_size=32, seed=1)
    second = make_synthetic(tmp_path / "b", classes=["grid"], num_train=2, num_test=3, image_size=32, seed=1)
    third = make_synthetic(tmp_path / "c", classes=["grid"], num_train=2, num_test=3, image_size=32, seed=2)
    assert folder_digest(first) == folder_digest(second) != folder_digest(third)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="available: wood"):
        make_synthetic(tmp_path, classes=["carpet"])
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic(tmp_path, image_size=4)

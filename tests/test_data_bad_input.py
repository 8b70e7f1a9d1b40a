"""Bad input: missing folders and masks, corrupt files, unusual image modes, odd mask sizes."""

import numpy as np
import pytest
from PIL import Image, ImageFile

from ssmad.data import ImageReadError, build_dataset, read_image, read_mask
from test_data_layouts import mvtec_layout, write_image, write_mask


def test_missing_root_and_no_classes(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        build_dataset("mvtec", tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no mvtec classes found"):
        build_dataset("mvtec", tmp_path / "empty", "train")


def test_bad_arguments(tmp_path):
    root = mvtec_layout(tmp_path)
    with pytest.raises(ValueError, match="split"):
        build_dataset("mvtec", root, "validation")
    with pytest.raises(ValueError, match="unknown dataset kind"):
        build_dataset("mvtec_ad", root, "train")
    with pytest.raises(ValueError, match="missing_mask"):
        build_dataset("mvtec", root, "test", missing_mask="ignore")


def test_class_without_images(tmp_path):
    root = mvtec_layout(tmp_path)
    for path in (root / "beta" / "train" / "good").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match="'beta' has no training images"):
        build_dataset("mvtec", root, "train")


def test_missing_mask_error_or_full(tmp_path):
    root = mvtec_layout(tmp_path)
    (root / "alpha" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 anomalous test image.*001.png.*missing_mask='full'"):
        build_dataset("mvtec", root, "test")
    with pytest.warns(UserWarning, match="1 anomalous test image"):
        dataset = build_dataset("mvtec", root, "test", image_size=64, missing_mask="full")
    index = next(i for i, s in enumerate(dataset.samples) if s.path.name == "001.png" and s.class_name == "alpha")
    assert dataset[index]["mask"].sum() == 64 * 64


def test_corrupt_and_truncated_images_name_the_file(tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="garbage.png"):
        read_image(garbage)
    for ext in (".png", ".jpg"):
        whole = tmp_path / f"whole{ext}"
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(whole)
        truncated = tmp_path / f"truncated{ext}"
        truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        with pytest.raises(ImageReadError, match=f"truncated{ext}"):
            read_image(truncated)
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        with pytest.raises(ImageReadError, match=f"truncated{ext}"):
            read_image(truncated)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_corrupt_file_in_dataset_raises_on_load(tmp_path):
    root = mvtec_layout(tmp_path)
    broken = root / "alpha" / "test" / "crack" / "000.png"
    broken.write_bytes(broken.read_bytes()[:40])
    dataset = build_dataset("mvtec", root, "test", classes="alpha")
    index = next(i for i, s in enumerate(dataset.samples) if s.path == broken)
    with pytest.raises(ImageReadError, match="000.png"):
        dataset[index]


def test_image_modes_are_converted(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    assert np.array_equal(np.asarray(read_image(tmp_path / "gray.png"))[..., 1], gray)

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: the colour is kept
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    assert np.asarray(read_image(tmp_path / "rgba.png"))[0, 0].tolist() == [200, 0, 0]

    palette = Image.fromarray(gray, mode="L").convert("P")
    palette.save(tmp_path / "palette.png")
    image = read_image(tmp_path / "palette.png")
    assert image.mode == "RGB" and np.abs(np.asarray(image)[..., 0].astype(int) - gray).max() <= 4

    sixteen = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040)  # up to 65520
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    converted = np.asarray(read_image(tmp_path / "sixteen.png"))[..., 0]
    assert np.array_equal(converted, np.rint(sixteen / 257.0).astype(np.uint8))  # scaled, not clipped
    assert converted.max() == 255 and len(np.unique(converted)) == 64

    Image.fromarray(gray > 100).save(tmp_path / "binary.png")
    assert np.array_equal(read_mask(tmp_path / "binary.png"), gray > 100)


def test_mask_of_other_size_is_resized_with_warning(tmp_path):
    root = tmp_path / "p"
    for i in range(3):
        write_image(root / "train" / "good" / f"{i}.png", size=(20, 20))
    write_image(root / "test" / "cut" / "0.png", size=(20, 20))
    write_mask(root / "ground_truth" / "cut" / "0_mask.png", size=(10, 10), box=(0, 0, 5, 5))
    dataset = build_dataset("mvtec", root, "test", image_size=64, mask_resolution="original")
    with pytest.warns(UserWarning, match="0_mask.png is 10x10 but its image is 20x20"):
        mask = dataset[0]["mask"][0]
    assert mask[:10, :10].all() and mask.sum() == 100

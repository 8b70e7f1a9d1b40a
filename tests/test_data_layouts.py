"""Every dataset layout, written here with tiny images, plus the real MVTec AD bottle."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssmad.data import IMAGENET_MEAN, IMAGENET_STD, build_dataset, detect_kind


def write_image(path: Path, size=(12, 10), value=128, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(path)


def write_mask(path: Path, size=(12, 10), box=(2, 2, 6, 5)):
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 255
    Image.fromarray(mask).save(path)


def mvtec_layout(root: Path, classes=("alpha", "beta"), normal="good", ext=".png", mask_suffix="_mask",
                 num_train=10):
    for name in classes:
        for i in range(num_train):
            write_image(root / name / "train" / normal / f"{i:03d}{ext}", value=100 + i)
        write_image(root / name / "test" / normal / f"000{ext}")
        for i in range(2):
            defect = "ko" if normal == "ok" else "crack"
            write_image(root / name / "test" / defect / f"{i:03d}{ext}", value=200)
            write_mask(root / name / "ground_truth" / defect / f"{i:03d}{mask_suffix}.png")
    return root


def check_test_split(dataset, num_classes, image_size=64):
    assert len(dataset) == 3 * num_classes
    labels = dataset.labels
    assert sorted(set(labels)) == [0, 1]
    for sample in (dataset[i] for i in range(len(dataset))):
        assert sample["image"].shape == (3, image_size, image_size)
        assert sample["image"].dtype == torch.float32
        assert sample["mask"].shape == (1, image_size, image_size)
        assert set(sample["mask"].unique().tolist()) <= {0.0, 1.0}
        if sample["label"] == 1:
            assert sample["mask"].sum() > 0
        else:
            assert sample["mask"].sum() == 0
        assert Path(sample["path"]).is_file()


@pytest.mark.parametrize("kind", ["mvtec", "mpdd", "auto"])
def test_mvtec_style_layout(tmp_path, kind):
    root = mvtec_layout(tmp_path)
    train = build_dataset(kind, root, "train", image_size=64)
    val = build_dataset(kind, root, "val", image_size=64)
    assert train.class_names == ["alpha", "beta"]
    assert len(train) == 18 and len(val) == 2
    assert not {s.path for s in train.samples} & {s.path for s in val.samples}
    check_test_split(build_dataset(kind, root, "test", image_size=64), 2)


def test_btad_layout_bmp_images_png_masks(tmp_path):
    root = mvtec_layout(tmp_path, classes=("01", "02", "03"), normal="ok", ext=".bmp", mask_suffix="")
    assert detect_kind(root) == "btad"
    dataset = build_dataset("btad", root, "test", image_size=64)
    assert dataset.class_names == ["01", "02", "03"]
    check_test_split(dataset, 3)


def test_mvtec3d_rgb_layout(tmp_path):
    for name in ("bagel", "tire"):
        for i in range(5):
            write_image(tmp_path / name / "train" / "good" / "rgb" / f"{i:03d}.png")
        write_image(tmp_path / name / "test" / "good" / "rgb" / "000.png")
        for i in range(2):
            write_image(tmp_path / name / "test" / "hole" / "rgb" / f"{i:03d}.png", value=10)
            write_mask(tmp_path / name / "test" / "hole" / "gt" / f"{i:03d}.png")
    assert detect_kind(tmp_path) == "mvtec3d"
    check_test_split(build_dataset("auto", tmp_path, "test", image_size=64), 2)
    assert len(build_dataset("mvtec3d", tmp_path, "train", image_size=64, val_fraction=0.2)) == 8


def test_visa_split_csv_layout(tmp_path):
    rows = ["object,split,label,image,mask"]
    for name in ("candle", "pcb1"):
        base = f"{name}/Data"
        for i in range(4):
            write_image(tmp_path / base / "Images" / "Normal" / f"{i:04d}.JPG")
            rows.append(f"{name},train,normal,{base}/Images/Normal/{i:04d}.JPG,")
        write_image(tmp_path / base / "Images" / "Normal" / "0100.JPG")
        rows.append(f"{name},test,normal,{base}/Images/Normal/0100.JPG,")
        for i in range(2):
            write_image(tmp_path / base / "Images" / "Anomaly" / f"{i:03d}.JPG", value=250)
            write_mask(tmp_path / base / "Masks" / "Anomaly" / f"{i:03d}.png")
            rows.append(f"{name},test,anomaly,{base}/Images/Anomaly/{i:03d}.JPG,{base}/Masks/Anomaly/{i:03d}.png")
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    assert detect_kind(tmp_path) == "visa"
    check_test_split(build_dataset("visa", tmp_path, "test", image_size=64), 2)
    assert len(build_dataset("visa", tmp_path, "train", classes=["pcb1"], val_fraction=0.25)) == 3


def test_folder_of_normal_images_alone(tmp_path):
    product = tmp_path / "my_widget"
    for i in range(20):
        write_image(product / f"img_{i}.jpg", value=i)
    assert detect_kind(product) == "folder"
    train = build_dataset("auto", product, "train", image_size=64)
    val = build_dataset("folder", product, "val", image_size=64)
    assert train.class_names == ["my_widget"]
    assert len(train) == 18 and len(val) == 2
    assert train[0]["label"] == 0 and train[0]["mask"].sum() == 0
    with pytest.raises(FileNotFoundError, match="no test images"):
        build_dataset("folder", product, "test")


def test_folder_with_test_folders_and_masks_by_stem(tmp_path):
    product = tmp_path / "widget"
    for i in range(5):
        write_image(product / "train" / f"{i}.png")
    write_image(product / "test" / "good" / "ok1.png")
    write_image(product / "test" / "scratch" / "s1.png", value=0)
    write_image(product / "test" / "dent" / "d1.png", value=0)
    write_mask(product / "masks" / "s1.png")
    write_mask(product / "masks" / "sub" / "d1_mask.png", box=(0, 0, 3, 3))
    dataset = build_dataset("auto", product, "test", image_size=(32, 64))
    by_name = {Path(s["path"]).name: s for s in (dataset[i] for i in range(len(dataset)))}
    assert by_name["ok1.png"]["label"] == 0
    assert by_name["s1.png"]["mask"].shape == (1, 32, 64)
    assert by_name["s1.png"]["mask"].sum() > by_name["d1.png"]["mask"].sum() > 0


def test_multi_class_folder_root(tmp_path):
    for name in ("a", "b"):
        for i in range(3):
            write_image(tmp_path / name / f"{i}.png")
    dataset = build_dataset("folder", tmp_path, "train", val_fraction=0.0)
    assert dataset.class_names == ["a", "b"] and len(dataset) == 6


def test_class_selection_and_unknown_class(tmp_path):
    root = mvtec_layout(tmp_path)
    assert build_dataset("mvtec", root, "test", classes="beta").class_names == ["beta"]
    assert build_dataset("mvtec", root / "alpha", "test").class_names == ["alpha"]
    with pytest.raises(ValueError, match="available: alpha, beta"):
        build_dataset("mvtec", root, "train", classes=["alpha", "gamma"])


def test_validation_split_is_seeded_and_per_class(tmp_path):
    root = mvtec_layout(tmp_path, num_train=30)
    first = build_dataset("mvtec", root, "val", seed=3)
    again = build_dataset("mvtec", root, "val", seed=3)
    other = build_dataset("mvtec", root, "val", seed=4)
    assert [s.path for s in first.samples] == [s.path for s in again.samples]
    assert [s.path for s in first.samples] != [s.path for s in other.samples]
    assert [s.class_name for s in first.samples].count("alpha") == 3
    only_alpha = build_dataset("mvtec", root, "val", classes=["alpha"], seed=3)
    assert [s.path for s in only_alpha.samples] == [s.path for s in first.samples if s.class_name == "alpha"]


def test_normalisation_and_resizing(tmp_path):
    write_image(tmp_path / "p" / "train" / "good" / "0.png", size=(40, 30), value=255)
    sample = build_dataset("mvtec", tmp_path / "p", "train", image_size=64, val_fraction=0.0)[0]
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(sample["image"][:, 4, 4], expected, atol=1e-6)


def test_real_mvtec_bottle(mvtec_root):
    train = build_dataset("mvtec", mvtec_root, "train", classes=["bottle"])
    val = build_dataset("mvtec", mvtec_root, "val", classes=["bottle"])
    test = build_dataset("auto", mvtec_root, "test")
    assert len(train) + len(val) == 209 and len(val) == 21
    assert len(test) == 83 and test.class_names == ["bottle"]
    assert sum(s.mask_path is not None for s in test.samples) == 63
    anomalous = next(i for i, s in enumerate(test.samples) if s.label == 1)
    sample = test[anomalous]
    assert sample["image"].shape == (3, 256, 256) and sample["mask"].sum() > 0


def test_folder_masks_are_matched_by_defect_folder_before_stem(tmp_path):
    """MVTec-style names in a folder dataset: test/<defect>/000.png gets ground_truth/<defect>/000_mask.png."""
    product = tmp_path / "widget"
    for i in range(3):
        write_image(product / "train" / f"{i}.png")
    write_image(product / "test" / "crack" / "000.png", value=0)
    write_image(product / "test" / "scratch" / "000.png", value=0)
    write_mask(product / "ground_truth" / "crack" / "000_mask.png", box=(0, 0, 2, 2))
    write_mask(product / "ground_truth" / "scratch" / "000_mask.png", box=(0, 0, 10, 8))
    dataset = build_dataset("folder", product, "test")
    masks = {s.defect_type: s.mask_path for s in dataset.samples}
    assert masks["crack"] == product / "ground_truth" / "crack" / "000_mask.png"
    assert masks["scratch"] == product / "ground_truth" / "scratch" / "000_mask.png"


def test_folder_mask_matched_by_stem_only_when_unambiguous(tmp_path):
    product = tmp_path / "widget"
    for i in range(3):
        write_image(product / "train" / f"{i}.png")
    write_image(product / "test" / "dent" / "000.png", value=0)
    write_mask(product / "masks" / "a" / "000_mask.png")
    write_mask(product / "masks" / "b" / "000.png")
    with pytest.raises(ValueError, match=r"ambiguous.*a[/\\]000_mask.png.*b[/\\]000.png"):
        build_dataset("folder", product, "test")


def test_classes_of_their_own_geometry_and_original_masks(tmp_path):
    """long:N gives each class its median aspect ratio; masks come at the model's or the image's size;
    batches never mix geometries."""
    from ssmad.data.geometry import Geometry

    for name, size in (("wide", (60, 20)), ("tall", (20, 50))):  # PIL sizes are (width, height)
        for i in range(3):
            write_image(tmp_path / name / "train" / "good" / f"{i}.png", size=size)
        write_image(tmp_path / name / "test" / "good" / "0.png", size=size)
        write_image(tmp_path / name / "test" / "cut" / "1.png", size=size, value=0)
        write_mask(tmp_path / name / "ground_truth" / "cut" / "1_mask.png", size=size, box=(0, 0, 4, 6))
    train = build_dataset("mvtec", tmp_path, "train", image_size="long:128", val_fraction=0.0)
    assert train.geometries == {"tall": Geometry(128, 64), "wide": Geometry(32, 128)}  # 128/2.5 = 51 -> 64; 128/3 = 43 -> 32
    test = build_dataset("mvtec", tmp_path, "test", image_size=train.geometries, mask_resolution="original")
    tall = next(i for i, s in enumerate(test.samples) if s.class_name == "tall" and s.label == 1)
    assert test[tall]["image"].shape == (3, 128, 64)
    assert test[tall]["mask"].shape == (1, 50, 20) and test[tall]["mask"].sum() == 24
    model_masks = build_dataset("mvtec", tmp_path, "test", image_size=train.geometries)
    assert model_masks[tall]["mask"].shape == (1, 128, 64)
    batches = test.geometry_batches(3)
    assert sorted(i for batch in batches for i in batch) == list(range(len(test)))
    assert all(len({test.geometry(i) for i in batch}) == 1 and len(batch) <= 3 for batch in batches)
    with pytest.raises(ValueError, match="no stored geometry for class 'tall'"):
        build_dataset("mvtec", tmp_path, "test", image_size={"wide": Geometry(32, 128)})

"""Regions of interest (``--roi``): parsing and its refusals, crops and placed maps held to slicing by
hand, and datasets whose items are the transform of the cropped image (``long:N`` of the box's aspect)."""

import numpy as np
import pytest
from engine_tiny import make_tiny_data
from PIL import Image

from ssmad.cli import main
from ssmad.data import build_dataset, read_image
from ssmad.data.geometry import Geometry
from ssmad.data.image_io import read_mask
from ssmad.data.roi import Roi, class_rois, parse_roi_option
from ssmad.data.transforms import ImageTransform, resize_mask

NUT_BOX = (16, 0, 48, 64)  # the middle half of the 64 x 64 nut images: 32 wide, 64 high
NUT_ROI = "nut=16,0,48,64"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("roi") / "data")


def test_a_box_parses_with_or_without_class_and_keeps_pillow_sizes():
    assert parse_roi_option(" bottle = 10, 20,110,220") == ("bottle", Roi(10, 20, 110, 220))
    assert parse_roi_option("0,0,5,7") == (None, Roi(0, 0, 5, 7))
    roi = Roi(10, 20, 110, 220)
    assert (roi.width, roi.height, roi.size_hw, roi.aspect, str(roi)) == (100, 200, (200, 100), 0.5, "10,20,110,220")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3", "is not understood: give [CLASS=]LEFT,TOP,RIGHT,BOTTOM"),
        ("nut=1,2,x,4", "is not understood"),
        ("5,5,3,9", "is empty: give right > left and bottom > top"),
        ("0,9,4,9", "is empty"),
        ("=1,2,3,4", "has an empty class name"),
    ],
)
def test_bad_boxes_are_refused_naming_the_form(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_roi_option(text)


def test_the_command_line_refuses_a_bad_box_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--data", "nowhere", "--out", "nowhere", "--roi", "9,0,3,4"])
    assert stopped.value.code == 2
    assert "argument --roi: region of interest 9,0,3,4 is empty" in capsys.readouterr().err


def test_a_box_without_class_is_every_class_and_a_named_one_replaces_it():
    names = ["wood", "nut", "grid"]
    assert class_rois(["1,1,9,9", "nut=0,0,4,4"], names) == {
        "wood": Roi(1, 1, 9, 9), "nut": Roi(0, 0, 4, 4), "grid": Roi(1, 1, 9, 9),
    }
    assert class_rois(["nut=0,0,4,4"], names) == {"nut": Roi(0, 0, 4, 4)}
    assert class_rois([], names) == {}
    stored = {"nut": Roi(0, 0, 4, 4), "wood": Roi(1, 1, 9, 9)}
    assert class_rois(stored, ["nut"]) == {"nut": Roi(0, 0, 4, 4)}  # a test of some of a run's classes


def test_a_class_the_data_lacks_or_two_boxes_for_one_class_are_refused():
    with pytest.raises(ValueError, match=r"--roi bolt=0,0,4,4: the data has no class 'bolt'; its classes are wood, nut"):
        class_rois(["bolt=0,0,4,4"], ["wood", "nut"])
    with pytest.raises(ValueError, match="class 'nut' already has a region of interest"):
        class_rois(["nut=0,0,4,4", "nut=1,1,4,4"], ["nut"])
    with pytest.raises(ValueError, match="every class already has a region of interest"):
        class_rois(["0,0,4,4", "1,1,4,4"], ["nut"])


def test_crop_and_place_are_the_box_of_the_array():
    pixels = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    roi = Roi(2, 1, 7, 4)
    cropped = roi.crop(Image.fromarray(pixels), "photo.png")
    np.testing.assert_array_equal(np.asarray(cropped), pixels[1:4, 2:7])
    np.testing.assert_array_equal(roi.crop_array(pixels[..., 0]), pixels[1:4, 2:7, 0])
    roi_map = np.arange(1, 16, dtype=np.float32).reshape(3, 5)
    expected = np.zeros((6, 8), np.float32)
    expected[1:4, 2:7] = roi_map
    np.testing.assert_array_equal(roi.place(roi_map, (6, 8)), expected)
    with pytest.raises(ValueError, match="does not fit region of interest"):
        roi.place(np.zeros((4, 5), np.float32), (6, 8))


def test_an_image_that_does_not_hold_the_box_is_refused_naming_file_and_size():
    with pytest.raises(ValueError, match=r"line3/cam2\.png is 40x30 \(W x H\) but its region of interest 0,0,50,20 "
                                         r"reaches to x=50, y=20: give a --roi inside every image of the class"):
        Roi(0, 0, 50, 20).crop(Image.new("RGB", (40, 30)), "line3/cam2.png")


def test_dataset_items_are_the_transform_of_the_cropped_image_and_long_n_takes_the_box_aspect(data):
    test_set = build_dataset("mvtec", data, "test", image_size="long:64", rois=[NUT_ROI], mask_resolution="model")
    assert test_set.geometries == {"wood": Geometry(64, 64), "nut": Geometry(64, 32)}  # the images are square
    assert test_set.rois == {"nut": Roi(*NUT_BOX)}
    nut = next(i for i, s in enumerate(test_set.samples) if s.class_name == "nut" and s.mask_path is not None)
    sample, item = test_set.samples[nut], test_set[nut]
    expected = ImageTransform((64, 32), test_set.transforms["nut"].mean.flatten().tolist(),
                              test_set.transforms["nut"].std.flatten().tolist())(read_image(sample.path).crop(NUT_BOX))
    assert item["image"].equal(expected)
    mask = read_mask(sample.mask_path)
    assert item["mask"].equal(resize_mask(mask[:, 16:48], (64, 32)))  # the model's view of the mask
    assert (item["width"], item["height"]) == (64, 64)  # the image's own size
    original = build_dataset("mvtec", data, "test", image_size="long:64", rois=[NUT_ROI], mask_resolution="original")
    assert original[nut]["mask"].equal(resize_mask(mask, (64, 64))) and original[nut]["image"].equal(expected)
    wood = next(i for i, s in enumerate(test_set.samples) if s.class_name == "wood")
    assert test_set[wood]["image"].shape == (3, 64, 64)  # a class without ROI is whole


def test_a_dataset_image_smaller_than_the_box_is_refused_before_anything_runs(data):
    with pytest.raises(ValueError, match=r"nut/train/good/\d+\.png is 64x64 \(W x H\) but its region of interest 0,0,80,64"):
        build_dataset("mvtec", data, "train", classes="nut", rois=["0,0,80,64"], image_size=64)
    with pytest.raises(ValueError, match=r"nut/test/\w+/\d+\.png is 64x64 \(W x H\) but its region of interest 0,0,64,65"):
        build_dataset("mvtec", data, "test", rois=["nut=0,0,64,65"], image_size=64)


def test_stored_boxes_round_trip_and_a_run_without_them_has_none():
    from ssmad.data.roi import rois_from_lists, rois_to_lists
    from ssmad.engine.checkpoint import stored_rois

    rois = {"nut": Roi(16, 0, 48, 64), "wood": Roi(0, 1, 2, 3)}
    assert rois_to_lists(rois) == {"nut": [16, 0, 48, 64], "wood": [0, 1, 2, 3]}
    assert rois_from_lists(rois_to_lists(rois)) == rois
    assert stored_rois({"rois": rois_to_lists(rois)}) == rois
    assert stored_rois({"rois": {}}) == {}  # a run without --roi (and one of schema 3, migrated)

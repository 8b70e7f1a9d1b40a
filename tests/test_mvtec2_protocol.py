"""MVTec AD 2's protocol end to end on the miniature tree: a tiny run trains on train/good,
calibrates on validation/good, is tested on test_public (SegF1 at the calibrated pixel threshold,
AU-PRO at 0.05 and 0.3, beside the seven metrics) and writes the server's form for both private
splits."""

import json

import numpy as np
import pytest
from engine_tiny import tiny_cli_args
from PIL import Image

from mvtec2_tiny import TINY_CLASSES, make_mvtec2_tree
from ssmad.cli import main
from ssmad.engine.checkpoint import load_checkpoint
from ssmad.engine.mvtec2_submission import submission_paths
from ssmad.engine.thresholds import Calibration
from ssmad.metrics import aupro, seg_f1

pytestmark = pytest.mark.slow


def test_the_miniature_tree_trains_calibrates_on_validation_tests_and_writes_both_private_splits(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tree = make_mvtec2_tree(tmp_path / "mvtec_ad_2")
    run = tmp_path / "run"
    args = [*tiny_cli_args(tree, run), "--dataset", "mvtec2", "--epochs", "1", "--pixel-rule", "mean_std", "--test"]
    assert main(args) == 0
    payload = load_checkpoint(run)
    calibration = Calibration.from_dict(payload["calibration"])
    # validation/good: 3 normals per class (a held-out tenth of the 6 training normals would be 1)
    assert {name: cal.num_images for name, cal in calibration.classes.items()} == {"can": 3, "vial": 3}
    assert calibration.classes["can"].pixel.rule == "mean_std"

    report = json.loads((run / "test" / "metrics.json").read_text())
    for name in TINY_CLASSES:
        row = report["decision"][name]
        assert row["pixel_threshold"] == calibration.classes[name].pixel.value and row["pixel_rule"] == "mean_std"
        assert (row["test_good"], row["test_bad"], row["calibration_normals"]) == (2, 2, 3)
        assert set(row) >= {"seg_f1", "aupro@0.05", "aupro@0.3", "supported_fpr", "test_fpr_interval", "regions"}
        assert 0.0 <= row["seg_f1"] <= 1.0 and row["regions"]["found"] + row["regions"]["missed"] == 2
    decisions_md = (run / "test" / "decisions.md").read_text()
    assert "AU-PRO@0.05" in decisions_md and decisions_md.startswith("image score: top_mean:0.01 (the mean of the highest 1 %")
    assert report["image_score"] == "top_mean:0.01"

    out = tmp_path / "submission"
    private = [str(tree / name / split) for name in TINY_CLASSES for split in ("test_private", "test_private_mixed")]
    assert main(["predict", str(run), *private, "--submission-root", str(tree), "--out", str(out), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 3
    for row in rows:
        map_path, mask_path = submission_paths(out, tree, row["path"])
        width, height = Image.open(row["path"]).size
        values = tifffile.imread(map_path)
        assert values.dtype == np.float16 and values.shape == (height, width)
        written = np.asarray(Image.open(mask_path))
        np.testing.assert_array_equal(written, np.asarray(Image.open(out / "masks" / row["mask"])))
        assert (written > 0).any() == bool(row["regions"])


def test_seg_f1_and_aupro_of_the_report_match_their_definitions_on_the_predicted_masks():
    from ssmad.engine.decision_report import class_decisions
    from ssmad.engine.thresholds import ClassCalibration

    rng = np.random.default_rng(0)
    truth = [np.zeros((8, 9), np.uint8) for _ in range(4)]
    truth[2][1:4, 2:5] = truth[3][5:7, 0:3] = 1
    maps = [rng.random((8, 9)) + 0.8 * t for t in truth]
    predicted = [m >= 1.0 for m in maps]
    cal = ClassCalibration(threshold=1.5, scale=0.1, map_low=0.0, map_high=1.5, num_images=20)
    calibration = Calibration(0.05, {"a": cal}, cal)
    labels, scores = np.array([0, 0, 1, 1]), np.array([m.max() for m in maps])
    row = class_decisions(calibration, "a", labels, scores, truth, maps, predicted, 1.0, "given", 1)
    assert row["seg_f1"] == pytest.approx(seg_f1(truth, maps, 1.0))
    assert row["aupro@0.05"] == pytest.approx(aupro(truth, maps, 0.05))
    flagged = scores >= 1.5
    assert row["test_fpr"] == flagged[:2].mean() and row["test_tpr"] == flagged[2:].mean()
    assert row["smallest_supported_fpr"] == pytest.approx(1 / 21)

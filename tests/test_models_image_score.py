"""The image score rules against a plain sort, and their validation and migration."""

import numpy as np
import pytest
import torch

from ssmad.models.config import ModelConfig
from ssmad.models.image_score import image_scores, parse_image_score, with_legacy_image_score


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.5, 1.0])
def test_top_mean_is_the_mean_of_the_highest_pixels_of_a_sorted_map(fraction):
    maps = torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(0))
    count = max(1, round(fraction * 17 * 23))
    expected = [np.sort(m.numpy().ravel())[::-1][:count].mean() for m in maps]
    np.testing.assert_allclose(image_scores(maps, f"top_mean:{fraction}").numpy(), expected, rtol=1e-6)


def test_max_is_the_maximum_and_a_tiny_fraction_keeps_one_pixel():
    maps = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(1))
    expected = maps.flatten(1).amax(1)
    assert torch.equal(image_scores(maps, "max"), expected)
    assert torch.equal(image_scores(maps, "top_mean:0.001"), expected)  # 0.025 pixels: at least one


def test_a_defect_patch_outranks_one_bright_normal_pixel_only_by_the_top_mean():
    normal, defect = torch.zeros(100, 100), torch.zeros(100, 100)
    normal[0, 0] = 1.0  # one bright border pixel of a normal texture
    defect[40:50, 40:50] = 0.9  # a 10 x 10 defect, 1 % of the image
    maps = torch.stack([normal, defect])
    assert image_scores(maps, "max").argmax() == 0
    assert image_scores(maps, "top_mean:0.01").argmax() == 1


@pytest.mark.parametrize("rule", ["mean", "top_mean", "top_mean:0", "top_mean:1.5", "top_mean:x", "top:0.1"])
def test_unknown_rules_are_refused_naming_the_forms(rule):
    with pytest.raises(ValueError, match="top_mean:F"):
        parse_image_score(rule)
    with pytest.raises(ValueError, match="top_mean:F"):
        ModelConfig(image_score=rule)


def test_configs_stored_before_the_rule_keep_the_maximum():
    assert with_legacy_image_score({"preset": "mambaad"}) == {"preset": "mambaad", "image_score": "max"}
    assert with_legacy_image_score({"image_score": "top_mean:0.05"})["image_score"] == "top_mean:0.05"


def test_calibrate_switches_a_runs_image_score_for_every_class_only(tiny_run_copy, capsys):
    import ssmad
    from ssmad.cli import main
    from ssmad.engine.checkpoint import load_checkpoint

    run = tiny_run_copy.run
    assert load_checkpoint(run)["model_config"]["image_score"] == "top_mean:0.01"
    assert main(["calibrate", str(run), "--classes", "wood", "--image-score", "max", "--device", "cpu"]) == 2
    assert "leave --image-score out" in capsys.readouterr().err
    assert main(["calibrate", str(run), "--image-score", "max", "--device", "cpu"]) == 0
    assert "image score: max (the maximum" in capsys.readouterr().out
    detector = ssmad.load(run, "cpu")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    result = detector.predict(images, class_name="wood")
    np.testing.assert_allclose(result.scores, [m.max() for m in result.maps], rtol=1e-6)
    assert load_checkpoint(run)["model_config"]["image_score"] == "max"
    assert main(["calibrate", str(run), "--image-score", "mean", "--device", "cpu"]) == 2
    assert "top_mean:F" in capsys.readouterr().err

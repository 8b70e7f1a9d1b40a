"""Region-level counts on a hand-made case: found and missed defects, IoU, false regions."""

import numpy as np
import pytest

from ssmad.metrics.region_counts import region_counts


def test_hand_made_counts():
    good_truth = np.zeros((6, 6), dtype=bool)
    good_predicted = np.zeros((6, 6), dtype=bool)
    good_predicted[0, 0] = good_predicted[4:6, 4] = True  # two false regions on a good image
    truth = np.zeros((6, 8), dtype=bool)
    truth[0:2, 0:2] = True  # defect A, 4 px
    truth[4:6, 5:8] = True  # defect B, 6 px
    predicted = np.zeros((6, 8), dtype=bool)
    predicted[1:3, 1:3] = True  # overlaps A at (1, 1): IoU 1 / (4 + 4 - 1)
    predicted[5, 0:2] = True  # touches no defect: a false region on an anomalous image
    counts = region_counts([good_truth, truth], [good_predicted, predicted])
    assert (counts.found, counts.missed) == (1, 1)
    assert counts.ious == pytest.approx([1 / 7, 0.0])
    assert (counts.false_regions, counts.false_regions_on_good, counts.good_images) == (3, 2, 1)
    assert counts.false_regions_per_good_image == 2.0
    assert counts.to_dict()["mean_iou"] == pytest.approx(1 / 14)


def test_a_region_spanning_two_defects_finds_both():
    truth = np.zeros((1, 3, 7), dtype=bool)
    truth[0, 1, 0:2] = truth[0, 1, 5:7] = True
    predicted = np.zeros((1, 3, 7), dtype=bool)
    predicted[0, 0, :] = True  # one region along the top row
    predicted[0, 1, 1] = predicted[0, 1, 5] = True  # now it covers a pixel of each
    counts = region_counts(truth, predicted)
    assert (counts.found, counts.missed, counts.false_regions, counts.good_images) == (2, 0, 0, 0)
    # IoU of each defect: 1 shared pixel / (2 + 9 - 1)
    assert counts.ious == pytest.approx([0.1, 0.1])
    assert np.isnan(counts.false_regions_per_good_image)

"""Class inference (ssmad.engine.class_inference): prototypes against a plain mean, the confidence
in hand-made cases against its definition, and the detector choosing classes by it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import ssmad
from ssmad.cli import main
from ssmad.engine.class_inference import class_prototypes, infer_classes, pooled_embedding


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _clusters(seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Two classes of 8 unit embeddings each around orthogonal directions (D = 6)."""
    rng = np.random.default_rng(seed)
    a = _unit(np.array([1.0, 0, 0, 0, 0, 0]) + 0.2 * rng.normal(size=(8, 6)))
    b = _unit(np.array([0, 1.0, 0, 0, 0, 0]) + 0.2 * rng.normal(size=(8, 6)))
    return ["a"] * 8 + ["b"] * 8, np.concatenate([a, b])


def test_prototypes_are_the_unit_means_of_each_class():
    names, embeddings = _clusters()
    prototypes = class_prototypes(names, embeddings)
    for name in ("a", "b"):
        mean = embeddings[np.asarray(names) == name].mean(axis=0)
        np.testing.assert_allclose(prototypes[name].vector, mean / np.linalg.norm(mean), atol=1e-6)
        assert prototypes[name].num_normals == 8


def test_the_confidence_is_one_minus_the_distance_over_half_the_distance_between_prototypes():
    prototypes = class_prototypes(["a", "b"], np.eye(3)[:2])  # prototypes e1 and e2, sqrt(2) apart: balls of radius sqrt(2) / 2
    radius = np.sqrt(2) / 2
    on_a = np.eye(3)[:1]
    tilted = _unit(np.array([[1.0, 0.0, 0.3]]))  # a defective part: off its prototype, nowhere near b
    halfway = _unit(np.array([[1.0, 1.0, 0.0]]))  # as near to b as to a
    foreign = np.eye(3)[2:]  # a product the model never saw: 1 from both, beyond both balls
    guesses = infer_classes(prototypes, np.concatenate([on_a, tilted, halfway, foreign]))
    assert guesses[0].name == "a" and guesses[0].confidence == pytest.approx(1.0) and guesses[0].used
    assert guesses[0].similarity == pytest.approx(1.0)
    distance = np.linalg.norm(tilted[0] - np.eye(3)[0])
    assert guesses[1].name == "a" and guesses[1].confidence == pytest.approx(1 - distance / radius) and guesses[1].used
    assert guesses[1].similarity == pytest.approx(tilted[0, 0])
    assert guesses[2].confidence == pytest.approx(0.0, abs=1e-12) and not guesses[2].used
    assert guesses[3].confidence == 0.0 and not guesses[3].used


def test_each_class_has_its_own_ball_set_by_its_nearest_other_class():
    vectors = _unit(np.array([[1.0, 0.0, 0.0], [1.0, 0.2, 0.0], [0.0, 0.0, 1.0]]))  # a and a2 close, c far
    prototypes = class_prototypes(["a", "a2", "c"], vectors)
    probe = _unit(np.array([[0.0, 0.1, 1.0]]))  # near c, whose nearest other prototype is a2
    guess = infer_classes(prototypes, probe)[0]
    radius = np.linalg.norm(vectors[2] - vectors[1]) / 2
    assert guess.name == "c" and guess.confidence == pytest.approx(1 - np.linalg.norm(probe[0] - vectors[2]) / radius)
    between_twins = _unit(np.array([[1.0, 0.05, 0.0]]))  # nearer a than a2, yet in neither's ball by much
    guess = infer_classes(prototypes, between_twins)[0]
    radius = np.linalg.norm(vectors[0] - vectors[1]) / 2
    assert guess.name == "a" and guess.confidence == pytest.approx(1 - np.linalg.norm(between_twins[0] - vectors[0]) / radius)


def test_identical_classes_are_never_trusted_and_one_class_is_refused():
    names, embeddings = _clusters()
    twin = class_prototypes(["a"] * 8 + ["a2"] * 8, np.concatenate([embeddings[:8], embeddings[:8]]))
    guess = infer_classes(twin, np.asarray(twin["a"].vector)[None])[0]
    assert guess.confidence == 0.0 and not guess.used
    with pytest.raises(ValueError, match="at least two classes"):
        infer_classes(class_prototypes(["a"], embeddings[:1]), embeddings[:1])


def test_clustered_classes_are_inferred_right():
    names, embeddings = _clusters()
    prototypes = class_prototypes(names[::2], embeddings[::2])  # half the normals calibrate
    guesses = infer_classes(prototypes, embeddings[1::2])  # the other half
    assert [g.name for g in guesses] == names[1::2] and all(g.used for g in guesses)


def test_pooled_embedding_is_the_unit_concatenation_of_unit_level_means():
    features = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    embedding = pooled_embedding(features).numpy()
    means = [_unit(f.mean(dim=(2, 3)).numpy()) for f in features]
    np.testing.assert_allclose(embedding, np.concatenate(means, axis=1) / np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-6)


def _test_images(data, class_name: str) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in sorted((data / class_name / "test").rglob("*.png"))]


def _calibrate_on_all_normals(run) -> None:
    """The tiny run holds one validation normal per class: calibrate on all six per class for
    leave-one-out similarities (warned about, as they are the training normals)."""
    with pytest.warns(UserWarning, match="the model was trained on"):
        assert main(["calibrate", str(run), "--all-normals", "--device", "cpu"]) == 0


def test_the_detector_infers_the_class_of_unlabelled_images(tiny_run_copy, tmp_path):
    data, run = tiny_run_copy
    _calibrate_on_all_normals(run)
    detector = ssmad.load(run, "cpu")
    assert detector.class_inference_unavailable() is None
    wood, nut = _test_images(data, "wood"), _test_images(data, "nut")
    result = detector.predict(wood + nut)
    truth = ["wood"] * len(wood) + ["nut"] * len(nut)
    inferred = [guess.name for guess in result.class_guesses]
    # a random encoder separates the two synthetic classes weakly (pooled similarities ~0.99): most are right,
    # and the confidence keeps the wrong ones from being used
    assert np.mean(np.asarray(inferred) == np.asarray(truth)) >= 0.75
    assert all(guess.name == name for guess, name in zip(result.class_guesses, truth) if guess.used)
    for i, guess in enumerate(result.class_guesses):
        assert result.class_sources[i] == ("inferred" if guess.used else "global")
        assert result.calibration_classes[i] == (guess.name if guess.used else None)
        if not guess.used:
            assert any("judged against the global threshold" in note for note in result.warnings[i])
    assert sum(guess.used for guess in result.class_guesses) >= len(truth) // 2
    record = result.image(0).record()
    assert record["inferred_class"] == "wood" and record["class_confidence"] == result.class_guesses[0].confidence
    # a class given, or named by a folder, is not inferred
    given = detector.predict(wood[:1], class_name="nut")
    assert given.class_sources == ["given"] and given.class_guesses == [None] and given.calibration_classes == ["nut"]
    path = next((data / "nut" / "test").rglob("*.png"))
    named = detector.predict(str(path))
    assert named.class_sources == ["folder"] and named.calibration_classes == ["nut"]
    # ssmad predict writes the rule and the inferred class
    copied = tmp_path / "unlabelled.png"
    copied.write_bytes(path.read_bytes())
    assert main(["predict", str(run), str(copied), "--out", str(tmp_path / "p"), "--no-overlays", "--device", "cpu"]) == 0
    row = json.loads((tmp_path / "p" / "predictions.jsonl").read_text().splitlines()[0])
    assert row["inferred_class"] == "nut" and row["class_source"] in ("inferred", "global")


def test_a_guess_below_the_minimum_confidence_keeps_the_global_threshold_and_says_so(tiny_run):
    detector = ssmad.load(tiny_run.run, "cpu")
    detector.min_class_confidence = 1.01  # no confidence reaches it
    result = detector.predict(_test_images(tiny_run.data, "wood")[:2])
    guesses = result.class_guesses
    assert all(guess is not None and not guess.used for guess in guesses)
    assert result.class_sources == ["global", "global"] and result.calibration_classes == [None, None]
    assert result.thresholds.tolist() == [detector.calibration.overall.threshold] * 2
    assert f"class inferred as '{guesses[0].name}' with confidence {guesses[0].confidence:.2f}, below 1.01" in result.warnings[0][0]


def test_exported_embeddings_and_classes_equal_pytorch(tiny_run_copy, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    data, run = tiny_run_copy
    _calibrate_on_all_normals(run)
    assert main(["export", str(run), "--out", str(tmp_path / "model.onnx")]) == 0
    torch_detector, onnx_detector = ssmad.load(run, "cpu"), ssmad.load(tmp_path / "model.onnx", "cpu")
    images = _test_images(data, "wood")[:2] + _test_images(data, "nut")[:2]
    tensors = torch.stack([torch_detector.transforms[next(iter(torch_detector.transforms))](image) for image in images])
    np.testing.assert_allclose(onnx_detector.engine.embed(tensors), torch_detector.engine.embed(tensors).numpy(), atol=1e-5)
    expected, got = torch_detector.infer_classes(images), onnx_detector.infer_classes(images)
    assert [g.name for g in got] == [g.name for g in expected]
    np.testing.assert_allclose([g.similarity for g in got], [g.similarity for g in expected], atol=1e-5)

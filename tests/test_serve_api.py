"""The service through FastAPI's test client: every route, every bad input, the API key, the queue."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from serve_tiny import bomb_png, png_bytes, require_serve_packages

require_serve_packages()

from fastapi.testclient import TestClient  # noqa: E402

import ssmad  # noqa: E402
from ssmad.serve import MissingExtraError, ServeSettings, create_app, require_serve_extra  # noqa: E402
from ssmad.serve.batching import Batcher, QueueFull  # noqa: E402


@pytest.fixture(scope="module")
def detector(tiny_run):
    return ssmad.load(tiny_run.run, device="cpu")


def ready_client(app) -> TestClient:
    """A started test client whose /healthz says ready (warm-up done)."""
    client = TestClient(app)
    client.__enter__()
    for _ in range(600):
        if client.get("/healthz").status_code == 200:
            return client
        time.sleep(0.05)
    raise AssertionError(f"never ready: {client.get('/healthz').json()}")


@pytest.fixture(scope="module")
def client(detector):
    client = ready_client(create_app(detector, ServeSettings(max_batch=4, max_upload_mb=1)))
    yield client
    client.__exit__(None, None, None)


def image_field(data: bytes, name: str = "a.png") -> list:
    return [("image", (name, data, "image/png"))]


def test_health_model_page_and_docs(client, detector):
    assert client.get("/healthz").json()["status"] == "ready"
    info = client.get("/v1/model").json()
    assert info["classes"] == detector.class_names == ["nut", "wood"]
    assert info["thresholds"] == {name: detector.calibration.classes[name].threshold for name in detector.class_names}
    assert (info["preset"], info["ssmad_version"]) == ("pyramid_mamba", ssmad.__version__)
    assert info["input_sizes"] == {"nut": "64x64", "wood": "64x64"} and info["tile"] is None
    assert info["class_inference"] is None and info["min_class_confidence"] == 0.05
    page = client.get("/")
    assert page.status_code == 200 and "drop-zone" in page.text and "https://" not in page.text
    assert "fetch(\"/v1/predict\"" in client.get("/static/app.js").text
    assert client.get("/docs").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_predict_matches_the_detector_for_each_image_and_class(client, detector):
    files = image_field(png_bytes(seed=1), "one.png") + image_field(png_bytes(80, seed=2), "two.png")
    results = client.post("/v1/predict", files=files, data={"class": "wood"}).json()["results"]
    images = [Image.open(io.BytesIO(png_bytes(seed=1))).convert("RGB"), Image.open(io.BytesIO(png_bytes(80, seed=2))).convert("RGB")]
    expected = detector.predict(images, class_name="wood")
    assert [r["filename"] for r in results] == ["one.png", "two.png"]
    np.testing.assert_allclose([r["score"] for r in results], expected.scores, rtol=1e-5)
    np.testing.assert_allclose([r["normalized"] for r in results], expected.normalized, rtol=1e-5)
    assert [r["threshold"] for r in results] == list(expected.thresholds)
    assert [r["decision"] == "anomalous" for r in results] == list(expected.decisions)
    assert {r["class"] for r in results} == {"wood"}
    overlay = Image.open(io.BytesIO(base64.b64decode(results[0]["overlay_png"])))
    assert overlay.size == (2 * 64, 64)  # image | heatmap over image, at the input size


def test_without_class_a_multi_class_model_uses_the_global_threshold_and_overlay_false_omits_it(client, detector):
    result = client.post("/v1/predict?overlay=false", files=image_field(png_bytes())).json()["results"][0]
    assert result["class"] is None and result["threshold"] == detector.calibration.overall.threshold
    assert result["overlay_png"] is None
    # random noise is like neither class: a class is guessed, with no confidence, and not used (said why)
    assert result["class_source"] == "global" and result["inferred_class"] in ("nut", "wood")
    assert result["class_confidence"] == 0.0 and "below 0.05" in result["warnings"][0]


def test_an_upload_without_class_gets_its_inferred_class_and_confidence(tiny_run_copy):
    from ssmad.cli import main

    with pytest.warns(UserWarning, match="the model was trained on"):  # prototypes of all six normals per class
        assert main(["calibrate", str(tiny_run_copy.run), "--all-normals", "--device", "cpu"]) == 0
    detector = ssmad.load(tiny_run_copy.run, device="cpu")
    paths = sorted((tiny_run_copy.data / "wood" / "test").rglob("*.png")) + sorted((tiny_run_copy.data / "nut" / "test").rglob("*.png"))
    files = [("image", (f"upload{i}.png", path.read_bytes(), "image/png")) for i, path in enumerate(paths)]
    client = ready_client(create_app(detector, ServeSettings(max_batch=8, max_upload_mb=1)))
    try:
        assert client.get("/v1/model").json()["class_inference"] is None
        results = client.post("/v1/predict?overlay=false", files=files).json()["results"]
    finally:
        client.__exit__(None, None, None)
    expected = detector.predict([Image.open(path).convert("RGB") for path in paths])
    assert [r["inferred_class"] for r in results] == [guess.name for guess in expected.class_guesses]
    np.testing.assert_allclose([r["class_confidence"] for r in results], [g.confidence for g in expected.class_guesses], atol=1e-6)
    assert [r["class_source"] for r in results] == expected.class_sources
    assert "inferred" in expected.class_sources
    for record in results:
        assert record["class"] == (record["inferred_class"] if record["class_source"] == "inferred" else None)


def test_one_batch_keeps_each_images_class(detector):
    image = Image.open(io.BytesIO(png_bytes())).convert("RGB")
    result = detector.predict_decoded([image] * 3, [None] * 3, ["wood", None, "nut"])
    assert result.calibration_classes == ["wood", None, "nut"]
    cal = detector.calibration
    assert list(result.thresholds) == [cal.classes["wood"].threshold, cal.overall.threshold, cal.classes["nut"].threshold]
    with pytest.raises(ValueError, match="unknown class 'bolt'"):
        detector.predict_decoded([image], [None], ["bolt"])


def truncated_png() -> bytes:
    data = png_bytes(64)
    return data[: len(data) // 2]


BAD_INPUTS = {
    "not an image": (dict(files=image_field(b"%PDF-1.4 not a picture at all", "report.pdf")), 400, "the file is not an image"),
    "truncated file": (dict(files=image_field(truncated_png())), 400, "truncated"),
    "empty file": (dict(files=image_field(b"")), 400, "empty (0 bytes)"),
    "empty body": (dict(content=b"", headers={"Content-Type": "multipart/form-data; boundary=x"}), 400, "body is empty"),
    "not multipart": (dict(content=png_bytes(), headers={"Content-Type": "image/png"}), 415, "not multipart/form-data"),
    "decompression bomb": (dict(files=image_field(bomb_png())), 400, "decompression bomb"),
    "tiny image": (dict(files=image_field(png_bytes(4))), 400, "too small"),
    "wrong field name": (dict(files=[("file", ("a.png", png_bytes(), "image/png"))]), 422, "fields sent: 'file'"),
    "text in the image field": (dict(files=[("image", (None, b"a.png"))]), 422, "holds text, not a file"),
    "unknown class": (dict(files=image_field(png_bytes()), data={"class": "bolt"}), 422, "unknown class 'bolt'"),
    "oversized upload": (dict(files=image_field(b"\x89PNG" + bytes(1_200_000))), 413, "larger than the 1 MB"),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_is_a_4xx_json_error_and_the_next_request_is_served(client, kind):
    request, status, message = BAD_INPUTS[kind]
    response = client.post("/v1/predict", **request)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/predict", files=image_field(png_bytes())).status_code == 200


def test_a_chunked_body_over_the_limit_is_refused(client):
    def chunks():
        for _ in range(20):
            yield bytes(100_000)

    response = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413 and "--max-upload-mb" in response.json()["detail"]


def test_api_key(detector):
    client = ready_client(create_app(detector, ServeSettings(max_batch=2, api_key="s3cret")))
    try:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            response = client.get("/v1/model", headers=headers)
            assert response.status_code == 401 and "X-API-Key" in response.json()["detail"]
            assert client.post("/v1/predict", files=image_field(png_bytes()), headers=headers).status_code == 401
        assert client.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.post("/v1/predict", files=image_field(png_bytes()), headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
    finally:
        client.__exit__(None, None, None)


class GatedDetector:
    """The detector, but scoring waits for ``gate`` (set while warming up); ``scoring`` says it began."""

    def __init__(self, detector):
        self.detector = detector
        self.gate, self.scoring = threading.Event(), threading.Event()
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self.detector, name)

    def predict_decoded(self, *args, **kwargs):
        self.scoring.set()
        assert self.gate.wait(30)
        return self.detector.predict_decoded(*args, **kwargs)


def test_a_full_queue_answers_503_with_retry_after_and_a_slow_request_504(detector):
    gated = GatedDetector(detector)
    client = ready_client(create_app(gated, ServeSettings(max_batch=1, max_queue=1, batch_wait_ms=0, timeout_s=2)))
    try:
        gated.gate.clear()
        gated.scoring.clear()
        answers = []
        first = threading.Thread(target=lambda: answers.append(client.post("/v1/predict", files=image_field(png_bytes()))))
        first.start()
        assert gated.scoring.wait(10)  # the first image is being scored, the queue is empty
        second = threading.Thread(target=lambda: answers.append(client.post("/v1/predict", files=image_field(png_bytes()))))
        second.start()
        for _ in range(200):
            if client.get("/healthz").json()["queued_images"] == 1:
                break
            time.sleep(0.01)
        busy = client.post("/v1/predict", files=image_field(png_bytes()))
        assert busy.status_code == 503 and "server busy" in busy.json()["detail"]
        assert int(busy.headers["Retry-After"]) >= 1
        first.join(10)
        second.join(10)
        assert sorted(a.status_code for a in answers) == [504, 504]
        assert "not scored within 2 s" in answers[0].json()["detail"]
        gated.gate.set()
        assert client.post("/v1/predict", files=image_field(png_bytes())).status_code == 200
    finally:
        gated.gate.set()
        client.__exit__(None, None, None)


def test_batcher_scores_concurrent_requests_in_one_call_with_their_classes():
    calls = []

    def score(images, classes):
        calls.append(list(classes))
        return [f"{image}:{name}" for image, name in zip(images, classes)]

    async def scenario():
        batcher = Batcher(score, max_batch=8, max_queue=4, wait_s=0.2)
        batcher.start()
        try:
            results = await asyncio.gather(batcher.submit(["a"], ["wood"]), batcher.submit(["b", "c"], [None, "nut"]))
            with pytest.raises(QueueFull):
                await batcher.submit(["x"] * 5, [None] * 5)
            return results
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == [["a:wood"], ["b:None", "c:nut"]]
    assert calls == [["wood", None, "nut"]]


def test_missing_extra_names_the_install_command(monkeypatch, capsys):
    import importlib.util

    from ssmad.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r'uvicorn: pip install "ssmad\[serve\]"'):
        require_serve_extra()
    assert main(["serve", "no-such-run"]) == 2
    assert 'pip install "ssmad[serve]"' in capsys.readouterr().err


def test_predict_returns_the_regions_and_on_request_the_mask_png(client, detector):
    files = image_field(png_bytes(80, seed=2), "two.png")
    result = client.post("/v1/predict?mask=true", files=files, data={"class": "wood"}).json()["results"][0]
    expected = detector.predict([Image.open(io.BytesIO(png_bytes(80, seed=2))).convert("RGB")], class_name="wood").image(0)
    assert (result["width"], result["height"]) == (80, 80)
    assert result["regions"] == [region.to_dict() for region in expected.regions]
    assert result["pixel_threshold"] == expected.pixel_threshold == detector.calibration.classes["wood"].pixel_threshold.value
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["mask_png"]))))
    np.testing.assert_array_equal(mask, np.where(expected.mask, 255, 0))
    assert client.post("/v1/predict", files=files).json()["results"][0]["mask_png"] is None
    info = client.get("/v1/model").json()
    assert info["pixel_thresholds"]["wood"] == result["pixel_threshold"] and info["min_area"] == 1
    assert "region-box" in client.get("/static/app.js").text

"""A real uvicorn process (``ssmad serve`` on 127.0.0.1): load, and the web page in headless Chromium.

Load: 16 concurrent clients x 20 requests, none lost, none failed; the figures are printed (run
with -s), never asserted, since they depend on the machine.
Page: needs selenium (the test extra) and the system's Chromium and its driver (Debian: ``apt-get
install chromium chromium-driver``); nothing is downloaded (Selenium Manager is kept offline);
the page test skips, naming what is missing, otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import urllib.request

import pytest

from serve_tiny import png_bytes, require_serve_packages, running_server

require_serve_packages()

from ssmad.serve.load_generator import multipart_body, run_load  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def server(tiny_run):
    with running_server(tiny_run.run, "--max-batch", "8") as url:
        yield url


@pytest.mark.slow
def test_sixteen_concurrent_clients_get_every_answer(server):
    report = run_load(server, png_bytes(), clients=16, requests_per_client=20, timeout_s=60)
    print("\nload (tiny model, 16 clients x 20 requests):", json.dumps(report.summary()))
    assert report.failures == []
    assert report.answered == report.sent == 320
    with urllib.request.urlopen(f"{server}/healthz", timeout=5) as health:
        assert json.loads(health.read()) == {"status": "ready", "queued_images": 0}


@pytest.fixture
def browser():
    if importlib.util.find_spec("selenium") is None:
        pytest.skip('selenium is not installed: pip install -e ".[test]"')
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def api_score(url: str, image: bytes, class_name: str) -> dict:
    body, content_type = multipart_body(image)
    boundary = content_type.split("boundary=")[1]
    field = f"--{boundary}\r\nContent-Disposition: form-data; name=\"class\"\r\n\r\n{class_name}\r\n".encode()
    request = urllib.request.Request(f"{url}/v1/predict?overlay=false", data=field + body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["results"][0]


@pytest.mark.slow
def test_page_shows_the_apis_score_and_rescoring_as_another_class(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url = server
    image = png_bytes(seed=3)
    (tmp_path / "part.png").write_bytes(image)
    wait = WebDriverWait(browser, 60)
    browser.get(url)
    wait.until(lambda d: "classes: nut, wood" in d.find_element(By.ID, "model-line").text)
    upload = browser.find_element(By.ID, "file-input")
    browser.execute_script("arguments[0].hidden = false", upload)
    upload.send_keys(str(tmp_path / "part.png"))
    shown = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".card dd[data-field=score]"))
    expected = api_score(url, image, "")
    assert shown[0].text == f"{expected['score']:.6f}"
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    assert card.find_element(By.CSS_SELECTOR, "dd[data-field=decision]").text == expected["decision"]
    assert card.find_element(By.TAG_NAME, "img").get_attribute("src").startswith("data:image/png;base64,")
    guess = f"inferred {expected['inferred_class']}, confidence {expected['class_confidence']:.2f}"
    assert expected["class_source"] == "global"  # random noise is like neither class: no confident class
    assert card.find_element(By.CSS_SELECTOR, "dd[data-field='class from']").text == f"global threshold: {guess}, below 0.05"

    card.find_element(By.CSS_SELECTOR, "select.card-class option[value=wood]").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".card dd[data-field=class]").text == "wood")
    assert browser.find_element(By.CSS_SELECTOR, ".card dd[data-field='class from']").text == "given"
    as_wood = api_score(url, image, "wood")
    assert browser.find_element(By.CSS_SELECTOR, ".card dd[data-field=threshold]").text == f"{as_wood['threshold']:.6f}"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")) == 2

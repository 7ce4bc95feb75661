"""``kxform dev``'s playground in a real browser (headless Chromium from Debian's packages, driven by Selenium)
under a real ``kxform dev`` (Triton + kxform serve), and ``/docs`` of the transformer."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kxform.testing import ServerProcess, free_port, kxform_command

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[1]
IMAGE = REPO / "deploy" / "requests" / "cifar10-image.png"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
STAGES = {"decode", "preprocess", "predictor", "postprocess", "encode"}
WAIT_SECONDS = 60  # not a speed bound: a page that takes this long has hung


@pytest.fixture(scope="module")
def dev(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``kxform dev`` for cifar10 and text on free ports; ``http`` is the playground, ``serve`` kxform serve."""
    ports = {name: free_port() for name in ("http", "serve", "grpc", "triton_http", "triton_grpc", "metrics")}
    command = kxform_command(
        "dev",
        f"--model-repository={model_repository}",
        "--transformer=cifar10",
        "--transformer=text",
        f"--playground_port={ports['http']}",
        f"--http_port={ports['serve']}",
        f"--grpc_port={ports['grpc']}",
        f"--triton-http-port={ports['triton_http']}",
        f"--triton-grpc-port={ports['triton_grpc']}",
        f"--triton-metrics-port={ports['metrics']}",
    )
    server = ServerProcess(command, tmp_path_factory.mktemp("dev") / "dev.log", ports)
    server.start()
    try:
        server.wait_ready("/", timeout=300)  # the playground starts once serve is ready
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "headless Chromium is not installed: `apt-get install chromium chromium-driver` "
            "(make test installs them when missing)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def serve_url(dev: ServerProcess) -> str:
    return f"http://127.0.0.1:{dev.ports['serve']}"


def predict(dev: ServerProcess, model: str, body: object) -> Any:
    request = urllib.request.Request(
        f"{serve_url(dev)}/v1/models/{model}:predict", json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def send_from_page(browser: Any, plugin: str) -> dict[str, Any]:
    """Click Send and wait for the answer; what the page shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sent = browser.find_element(By.TAG_NAME, "body").get_attribute("data-sent") or "0"
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda d: (d.find_element(By.TAG_NAME, "body").get_attribute("data-sent") or "0") != sent
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "#timings tbody tr")
    return {
        "status": browser.find_element(By.ID, "status").text,
        "prediction": browser.find_element(By.ID, "prediction").text,
        "request_id": browser.find_element(By.ID, "request-id").text,
        "response": json.loads(browser.find_element(By.ID, "response").text),
        "timings": {
            row.find_elements(By.TAG_NAME, "td")[0].text: float(row.find_elements(By.TAG_NAME, "td")[1].text)
            for row in rows
        },
        "curl": browser.find_element(By.ID, "curl").text,
    }


def open_playground(browser: Any, dev: ServerProcess, plugin: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(dev.http_url + "/")
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#plugin option")) == 2)
    Select(browser.find_element(By.ID, "plugin")).select_by_value(plugin)


def test_playground_sends_an_uploaded_image_to_cifar10_and_shows_prediction_and_timings(
    dev: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    import base64

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_playground(browser, dev, "cifar10")
    browser.find_element(By.ID, "image").send_keys(str(IMAGE))
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda d: "image_bytes" in d.find_element(By.ID, "body").get_attribute("value")
    )
    shown = send_from_page(browser, "cifar10")
    browser.save_screenshot(str(tmp_path / "playground-cifar10.png"))

    expected = predict(
        dev, "cifar10", {"instances": [{"image_bytes": {"b64": base64.b64encode(IMAGE.read_bytes()).decode()}}]}
    )
    assert shown["status"] == "HTTP 200"
    assert shown["response"] == expected
    assert shown["prediction"].startswith(f"#0: {expected['predictions'][0]['class']}")
    assert len(shown["request_id"]) >= 16
    assert set(shown["timings"]) >= STAGES, shown["timings"]
    assert all(ms >= 0 for ms in shown["timings"].values())
    # the curl line is the same request: running it gives the same reply
    reply = subprocess.run(["bash", "-c", shown["curl"]], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(reply.stdout) == expected


def test_playground_sends_typed_text_to_the_text_plugin(dev: ServerProcess, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    open_playground(browser, dev, "text")
    browser.find_element(By.ID, "text").send_keys("What a wonderful, helpful example!\nThis is awful and broken.")
    shown = send_from_page(browser, "text")

    expected = predict(dev, "text", {"instances": ["What a wonderful, helpful example!", "This is awful and broken."]})
    assert shown["status"] == "HTTP 200"
    assert shown["response"] == expected
    labels = [prediction["label"] for prediction in expected["predictions"]]
    assert [line.split(" ")[1] for line in shown["prediction"].splitlines()] == labels
    assert set(shown["timings"]) >= STAGES


def test_playground_shows_the_transformers_error_for_a_bad_body(dev: ServerProcess, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    open_playground(browser, dev, "cifar10")
    body = browser.find_element(By.ID, "body")
    body.clear()
    body.send_keys('{"instances": [{"image_bytes": {"b64": "not base64!"}}]}')
    shown = send_from_page(browser, "cifar10")

    assert shown["status"] == "HTTP 400"
    assert "instances[0]" in shown["response"]["error"]


def test_docs_lists_the_transformers_real_endpoints_and_tensors(dev: ServerProcess) -> None:
    with urllib.request.urlopen(f"{serve_url(dev)}/docs", timeout=10) as reply:
        assert reply.headers["content-type"].startswith("text/html")
        page = reply.read().decode()
    for path in ("/v1/models/cifar10:predict", "/v2/models/cifar10/infer", "/v2/models/text/infer", "/metrics"):
        assert path in page
    metadata = json.loads(urllib.request.urlopen(f"{serve_url(dev)}/v2/models/cifar10", timeout=10).read())
    assert all(f"<code>{tensor['name']}</code>" in page for tensor in metadata["inputs"] + metadata["outputs"])

"""The status page in a real browser: Debian's headless chromium (driven by selenium
through chromium-driver) loads it from a real server, real tritonclient inferences make
the throughput plot and the request counter move in the DOM, and a screenshot is saved."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
SCREENSHOT = Path("/tmp/naiad-status-screenshot.png")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="headless chromium not installed: apt-get install chromium chromium-driver (make system-deps)")


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1300", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(15)
    yield driver
    driver.quit()


def wait_until(driver, script: str, timeout: float = 10.0):
    """Poll a JS expression in the page until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = driver.execute_script(f"return ({script});")
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"page never satisfied: {script}")


MODEL = "document.querySelector('.model[data-model=\"identity\"]')"
COUNT = f"{MODEL} && Number({MODEL}.querySelector('.count').textContent)"
RPS_MAX = f"{MODEL} && Number({MODEL}.querySelector('svg[data-key=\"rps\"]').dataset.max)"
P50_POINTS = f"{MODEL} && Number({MODEL}.querySelector('svg[data-key=\"p50_ms\"]').dataset.points)"


def test_page_moves_with_inferences(naiad, tmp_path, browser, identity_repo, infer_identity):
    proc = naiad("--model-repository", str(identity_repo),
                 config="[services.status]\ninterval_s = 0.25\nwindow_s = 120\n")
    browser.get(f"http://127.0.0.1:{proc.metrics_port}/")
    assert browser.title == "naiad status"

    # models table, stub table and config from the server
    wait_until(browser, "document.querySelectorAll('#models tbody tr').length > 0")
    cells = [td.text for td in browser.find_elements("css selector", "#models tbody tr td")]
    assert cells[:3] == ["identity", "1", "READY"]
    stub = [td.text for td in browser.find_elements("css selector", "#stubs tbody tr td")]
    assert stub[0] == "identity" and int(stub[3]) > 0 and stub[4].endswith("iB") and stub[5] == "0"
    assert '"status"' in browser.find_element("id", "config").text
    uptime = browser.find_element("id", "uptime").text
    assert uptime.endswith("s")

    # before: a flat throughput line and no requests
    wait_until(browser, MODEL)
    assert browser.execute_script(f"return {COUNT};") == 0
    assert browser.execute_script(f"return {RPS_MAX};") == 0

    for _ in range(3):  # three bursts a little apart: a shape on the plots, not one spike
        infer_identity(proc, 10)
        time.sleep(0.6)
    assert wait_until(browser, f"({COUNT}) === 30 && ({RPS_MAX}) > 0 && ({P50_POINTS}) > 0")
    assert browser.find_element("id", "error").text == ""

    shot = tmp_path / "naiad-status-screenshot.png"
    assert browser.save_screenshot(str(shot))
    shutil.copyfile(shot, SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000
    print(f"\nstatus page screenshot: {SCREENSHOT} (and {shot})")

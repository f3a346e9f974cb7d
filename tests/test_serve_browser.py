"""``scunext serve`` end to end in a real headless Chromium (selenium + the system chromedriver).

Skipped only when chromium / chromedriver / selenium are not installed (``.ci/run`` installs them). With
``SCUNEXT_SERVE_SCREENSHOT=PATH`` the page after segmentation is saved to PATH (the README picture,
``docs/images/serve.png``); ``SCUNEXT_SERVE_RUNS=DIR[:DIR...]`` then serves those run folders instead of the
1-epoch test run, for a picture of a trained model.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("flask", reason="the 'serve' extra (Flask) is not installed")
pytest.importorskip("selenium", reason="selenium is not installed")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from scunext.data import read_image, sample_dir  # noqa: E402
from scunext.deploy.predictor import Predictor  # noqa: E402
from scunext.serve import create_app, load_models, make_server  # noqa: E402

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,860",
)
ISIC_IMAGE = sample_dir("isic2017") / "images" / "ISIC_0014998.jpg"  # a test-split image of the shipped sample


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def run_dirs(request) -> list[Path]:
    """Run folders to serve: ``SCUNEXT_SERVE_RUNS`` if set, else a cheap 1-epoch run on the ISIC sample."""
    if os.environ.get("SCUNEXT_SERVE_RUNS"):
        return [Path(p) for p in os.environ["SCUNEXT_SERVE_RUNS"].split(os.pathsep) if p]
    return [request.getfixturevalue("tiny_run")]


@pytest.fixture(scope="module")
def base_url(run_dirs):
    """The app on a free loopback port, served from a background thread."""
    app = create_app(load_models(run_dirs), trusted_hosts=["localhost", "127.0.0.1"])
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    chromium = _chromium()
    if chromium is None or not CHROMEDRIVER.is_file():
        pytest.skip("chromium and /usr/bin/chromedriver are needed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    # An explicit driver path: selenium-manager is never asked to download anything.
    drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _open_page(driver, base_url: str) -> WebDriverWait:
    driver.get(base_url)
    wait = WebDriverWait(driver, 60)
    wait.until(EC.element_to_be_clickable((By.ID, "segment")))  # enabled once /api/models has answered
    return wait


def test_upload_segment_and_read_area(driver, base_url, run_dirs):
    wait = _open_page(driver, base_url)
    options = driver.find_elements(By.CSS_SELECTOR, "#model option")
    assert len(options) == len(run_dirs) and run_dirs[0].resolve().name in options[0].text

    driver.find_element(By.ID, "file").send_keys(str(ISIC_IMAGE))
    driver.find_element(By.ID, "segment").click()
    wait.until(EC.visibility_of_element_located((By.ID, "result")))
    wait.until(
        lambda d: d.execute_script(
            "const i = document.getElementById('overlay'); return i.complete && i.naturalWidth > 0;"
        )
    )

    image = read_image(ISIC_IMAGE)
    expected = Predictor.from_run(run_dirs[0]).predict([image])[0]
    area = int(expected.sum())
    assert driver.find_element(By.ID, "area-px").text == f"{area:,}"
    assert driver.find_element(By.ID, "area-pct").text == f"{100 * area / expected.size:.2f}"
    assert float(driver.find_element(By.ID, "ms").text) > 0
    assert driver.find_element(By.ID, "img-size").text == f"{image.shape[1]} × {image.shape[0]} px"
    overlay_width = driver.execute_script("return document.getElementById('overlay').naturalWidth;")
    assert overlay_width == image.shape[1]
    link = driver.find_element(By.ID, "download")
    assert link.get_attribute("download") == f"{ISIC_IMAGE.stem}_mask.png"
    assert link.get_attribute("href").startswith("blob:")
    assert not driver.find_element(By.ID, "error").is_displayed()
    assert not driver.find_element(By.ID, "area-mm2-box").is_displayed()  # a JPEG has no pixel spacing
    assert not driver.find_element(By.ID, "computed-box").is_displayed()  # segmented at its native size

    shot = os.environ.get("SCUNEXT_SERVE_SCREENSHOT")
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(shot)


def test_a_dicom_upload_shows_the_overlay_not_a_broken_original(driver, base_url, tmp_path):
    """A browser cannot show a DICOM file: the page showed a broken image for it. Now only the overlay (drawn by
    the server) is shown; a JPEG uploaded afterwards shows its original again."""
    pytest.importorskip("pydicom")
    from scunext.deploy.stream_benchmark import _write_dicom

    dcm = tmp_path / "scan.dcm"
    _write_dicom(read_image(ISIC_IMAGE).mean(axis=2).astype("uint8"), dcm, 0)
    wait = _open_page(driver, base_url)
    driver.find_element(By.ID, "file").send_keys(str(dcm))
    driver.find_element(By.ID, "segment").click()
    wait.until(EC.visibility_of_element_located((By.ID, "result")))
    wait.until(lambda d: d.execute_script(
        "const i = document.getElementById('overlay'); return i.complete && i.naturalWidth > 0;"))  # fmt: skip
    assert not driver.find_element(By.ID, "original").is_displayed()
    assert driver.find_element(By.ID, "area-mm2-box").is_displayed()  # the DICOM's pixel spacing
    driver.find_element(By.ID, "file").send_keys(str(ISIC_IMAGE))
    driver.find_element(By.ID, "segment").click()
    wait.until(lambda d: d.execute_script(
        "const i = document.getElementById('original'); return i.complete && i.naturalWidth > 0;"))  # fmt: skip
    assert driver.find_element(By.ID, "original").is_displayed()


def test_bad_file_shows_a_message(driver, base_url, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image at all\n")
    wait = _open_page(driver, base_url)
    driver.find_element(By.ID, "file").send_keys(str(fake))
    driver.find_element(By.ID, "segment").click()
    error = wait.until(EC.visibility_of_element_located((By.ID, "error")))
    assert re.search(r"not a PNG, JPEG or DICOM", error.text), error.text
    assert "Traceback" not in driver.page_source
    assert not driver.find_element(By.ID, "result").is_displayed()

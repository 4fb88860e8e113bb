"""The published page in a real headless browser (`nox -s page`; needs Debian's chromium and
chromium-driver, e.g. `apt-get install chromium chromium-driver`). Skipped where they are missing."""

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

PAGE = Path(__file__).resolve().parent.parent / "results" / "index.html"


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("needs chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def test_page_renders_sorts_and_loads_figures(browser):
    from selenium.webdriver.common.by import By

    assert PAGE.exists(), "build it first: nox -s bench (or python -m benchmarks.leaderboard results)"
    browser.get(PAGE.as_uri())
    assert "mixerbench leaderboard" in browser.title
    table = browser.find_element(By.ID, "runs")
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) > 0
    headers = table.find_elements(By.TAG_NAME, "th")
    col = [h.text for h in headers].index("accuracy")

    def column():
        return [
            float(r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-value"))
            for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
        ]

    headers[col].click()
    assert column() == sorted(column())
    headers[col].click()
    assert column() == sorted(column(), reverse=True)
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images
    for img in images:  # every embedded figure decoded to a real bitmap
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)

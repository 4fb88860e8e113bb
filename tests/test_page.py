"""The published page in a real headless browser (`nox -s page`; needs Debian's chromium and
chromium-driver, e.g. `apt-get install chromium chromium-driver`). Skipped where they are missing."""

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

# `nox -s page` checks the page as the current code draws it, built in an ignored folder (MIXERBENCH_PAGE)
PAGE = Path(os.environ.get("MIXERBENCH_PAGE") or Path(__file__).resolve().parent.parent / "results" / "index.html").resolve()


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("selenium.webdriver")
    if not ((shutil.which("chromium") or shutil.which("chromium-browser")) and shutil.which("chromedriver")):
        pytest.skip("needs chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
    from benchmarks.screenshots import browser as start

    driver = start()
    yield driver
    driver.quit()


def test_page_renders_sorts_and_loads_figures(browser):
    from selenium.webdriver.common.by import By

    assert PAGE.exists(), "build it first: python -m benchmarks.leaderboard results"
    browser.get(PAGE.as_uri())
    assert "mixerbench leaderboard" in browser.title
    table = browser.find_element(By.CSS_SELECTOR, "table[id^=runs-]")  # the first task's table
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
        browser.execute_script("arguments[0].scrollIntoView()", img)  # lazy images load when near
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)


@pytest.mark.parametrize("width", [1400, 400])
def test_nothing_overflows_a_laptop_or_a_phone(browser, width):
    from benchmarks.screenshots import overflow

    doc_width, window, offenders = overflow(browser, PAGE, width)
    assert doc_width <= window, f"at {width}px the page is {doc_width}px wide: {offenders}"


def test_the_first_screen_holds_the_headline_table_of_every_mixer_its_figure_and_the_verdict(browser):
    """At 1400 x 900, before any scrolling: the headline table is the page's first table and lists every
    mixer of the records, and the headline figure and the short verdict are in view."""
    import json

    from selenium.webdriver.common.by import By

    from benchmarks.store import Store

    screen = {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", screen)
    browser.get(PAGE.as_uri())
    first = browser.find_element(By.TAG_NAME, "table")
    assert first.get_attribute("id") == "headline"
    shown = {r.find_elements(By.TAG_NAME, "td")[0].text for r in first.find_elements(By.CSS_SELECTOR, "tbody tr")}
    recorded = {r["config"]["architecture"].get("name") for r in Store(PAGE.parent).records() if r.get("status") == "ok"}
    assert shown == recorded, json.dumps(sorted(recorded ^ shown))
    above_the_fold = (first, *(browser.find_element(By.CSS_SELECTOR, c) for c in (".first img", ".verdict.short")))
    for element in above_the_fold:
        bottom = browser.execute_script("return arguments[0].getBoundingClientRect().bottom", element)
        assert 0 < bottom <= 900, element.tag_name

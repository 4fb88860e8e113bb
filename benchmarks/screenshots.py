"""Screenshots of the published page (and design reviews) in headless Chromium, at a laptop's and a
phone's width, with a check that nothing overflows the window sideways (wide tables scroll inside
their own box, nothing else may be wider than the window).

    python -m benchmarks.screenshots runs/page/index.html reviews/gated_ema/report.html --out runs/page/screenshots

Needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) and selenium
(`nox -s page` installs it). Exits 1 if a page overflows at some width, naming the widest elements.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import sys
from pathlib import Path

from benchmarks.overrides import Parser

WIDTHS = (1400, 400)
MAX_HEIGHT = 16000  # px: Chromium's screenshot limit is near 16k; longer pages are cut there

# elements wider than the window, outside a horizontally scrolling box
OVERFLOW = """
const width = document.documentElement.clientWidth;
const out = [];
for (const el of document.body.querySelectorAll('*')) {
  if (el.closest('.scroll') || el.closest('details:not([open])')) continue;
  const r = el.getBoundingClientRect();
  if (r.width > 0 && r.right > width + 1)
    out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' ' + Math.round(r.right) + 'px');
}
return [document.documentElement.scrollWidth, width, out.slice(0, 5)];
"""


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        raise SystemExit("needs chromium and chromedriver on PATH (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-sync"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def overflow(driver, page: Path, width: int) -> tuple[int, int, list[str]]:
    """(document width, window width, the widest offending elements) of `page` at `width` px."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600}
    )
    driver.get(page.resolve().as_uri())
    return tuple(driver.execute_script(OVERFLOW))


def shoot(driver, page: Path, width: int, out: Path) -> tuple[Path, list[str]]:
    """A full-page PNG of `page` at `width` (cut at MAX_HEIGHT), beside it the first screen (`width` x 900,
    what a reader sees before scrolling: `<out stem>-first.png`), and the elements that overflow."""
    doc_width, window, offenders = overflow(driver, page, width)
    first = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.stem + "-first.png").write_bytes(base64.b64decode(first["data"]))
    height = min(int(driver.execute_script("return document.documentElement.scrollHeight")), MAX_HEIGHT)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
    )
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    problems = [f"document {doc_width}px wide in a {window}px window: " + ", ".join(offenders)] if doc_width > window else []
    return out, problems


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m benchmarks.screenshots", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pages", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/screenshots"))
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="window widths in px, comma-separated")
    args = parser.parse_args(argv)
    try:
        widths = [int(w) for w in args.widths.split(",")]
        if min(widths) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--widths {args.widths!r}: give positive integers, e.g. --widths 1400,400")
    missing = [p for p in args.pages if not p.is_file()]
    if missing:
        print(f"screenshots: no such page: {', '.join(map(str, missing))} (build it first)", file=sys.stderr)
        return 2
    driver = browser()
    failed = False
    try:
        for page in args.pages:
            stem = page.parent.name if page.name in ("index.html", "report.html") else page.stem
            for width in widths:
                path, problems = shoot(driver, page, width, args.out / f"{stem}-{page.stem}-{width}px.png")
                print(f"{path}: {'; '.join(problems) if problems else 'no overflow'}")
                failed |= bool(problems)
    finally:
        driver.quit()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

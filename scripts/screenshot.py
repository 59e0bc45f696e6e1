"""Take README's screenshots: the studio on the embedded model, mid-generation (headless Chromium).

    .venv/bin/python scripts/screenshot.py [--out assets/screenshot.png] [--after-step 24]
    .venv/bin/python scripts/screenshot.py --region 3 6 --out assets/screenshot_region.png
    .venv/bin/python scripts/screenshot.py --compare --out assets/screenshot_compare.png
    .venv/bin/python scripts/screenshot.py --extend 10 --after-step 60 --out assets/screenshot_extend.png

Launches the app on a free localhost port, types a prompt, presses Generate, waits until the
status line reaches step 24 (codebook 2) or a later one and shoots the page (Debian's /usr/bin/chromium via Playwright).
With ``--region START END``, a first run is generated and finished, its audio becomes the input,
and the shot is taken while a second run re-decodes that region of it. With ``--compare``, the
compare preset makes the prompt as MAGNeT, Hybrid and autoregressive runs, and the shot shows the
compare view (the table, the MAGNeT and autoregressive canvases stacked). With ``--extend SECONDS``,
a first run is generated and finished, and the shot is taken while Extend continues it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from magnet_demo.studio.handlers import DemoApp  # noqa: E402
from magnet_demo.studio.wiring import launch_local  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PROMPT = "upbeat funk with slap bass, electric piano and drums at 120 bpm"
TIMEOUT_MS = 300_000


def status_has(text: str) -> str:
    return f"() => (document.querySelector('#status')?.innerText || '').includes({text!r})"


def redecode(page, region: list[float]) -> None:
    """Make a first run, take its audio as the input and set up the re-decoding of ``region``."""
    page.locator("#generate").click()
    page.wait_for_function(  # the run's event ends once its files are written
        "() => { const s = document.querySelector('#status')?.innerText || '';"
        " return s.includes('Run #1 finished') && !s.includes('being written'); }",
        timeout=TIMEOUT_MS,
    )
    page.get_by_text("Audio in: continue a clip").click()
    page.locator("#use-run").click()
    page.wait_for_function(status_has("Input audio"), timeout=TIMEOUT_MS)
    page.locator("#mode").get_by_text("re-decode region", exact=True).click()
    for elem_id, value in zip(("region-start", "region-end"), region, strict=True):
        box = page.locator(f"#{elem_id} input[type=number]")
        box.fill(str(value))
        box.blur()
    page.get_by_label("Prompt").fill("a calm piano interlude")


def extend(page, seconds: float) -> None:
    """Make a first run, then press Extend to continue it by ``seconds``."""
    page.locator("#generate").click()
    page.wait_for_function(
        "() => { const s = document.querySelector('#status')?.innerText || '';"
        " return s.includes('Run #1 finished') && !s.includes('being written'); }",
        timeout=TIMEOUT_MS,
    )
    box = page.locator("#extend-seconds input")
    box.fill(str(seconds))
    box.blur()
    page.locator("#extend").click()


def compare(page) -> None:
    """Run the compare preset and bring the compare view (table, canvases A and B) into view."""
    page.locator("#compare-preset").click()
    page.wait_for_function(
        "() => (document.querySelector('#compare-timing')?.innerText || '').includes('run #3 (Autoregressive)')",
        timeout=3 * TIMEOUT_MS,
    )
    page.wait_for_timeout(500)  # the pictures load
    page.locator("#compare-table").scroll_into_view_if_needed()
    page.evaluate("() => document.querySelector('#compare-table').scrollIntoView({block: 'start'})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="assets/screenshot.png")
    parser.add_argument("--model", default="embedded")
    parser.add_argument(
        "--after-step", type=int, default=24, help="shoot once the status line is at this step or later"
    )
    parser.add_argument("--region", type=float, nargs=2, metavar=("START", "END"), help="re-decode a region")
    parser.add_argument(
        "--compare", action="store_true", help="the compare view after the three-method preset"
    )
    parser.add_argument("--extend", type=float, metavar="SECONDS", help="shoot while Extend continues a run")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    demo, url = launch_local(DemoApp(default_model=args.model, output_root=Path(tempfile.mkdtemp())))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1200 if args.region else 1060})
            page.goto(url, wait_until="load")
            page.wait_for_function(
                "() => (document.querySelector('#status')?.innerText || '').includes('Ready.')"
            )
            page.get_by_label("Prompt").fill(PROMPT)
            if args.compare:
                compare(page)
                page.screenshot(path=args.out, full_page=False)
                browser.close()
                return
            if args.region:
                redecode(page, args.region)
            if args.extend:
                extend(page, args.extend)
            else:
                page.locator("#generate").click()
            # steps the page had no time to show are skipped: wait for this step or a later one
            page.wait_for_function(
                "() => { const m = (document.querySelector('#status')?.innerText || '')"
                f".match(/\\(step (\\d+) of/); return m && Number(m[1]) >= {args.after_step}; }}",
                timeout=TIMEOUT_MS,
            )
            page.wait_for_timeout(200)  # let the page draw the step
            if args.extend:  # the Extend button is further down: bring the live canvas back
                page.evaluate("() => document.querySelector('#status').scrollIntoView({block: 'start'})")
            page.screenshot(path=args.out, full_page=False)
            browser.close()
    finally:
        demo.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

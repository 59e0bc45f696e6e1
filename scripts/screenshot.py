"""Take README's screenshot: the studio on the embedded model, mid-generation (headless Chromium).

    .venv/bin/python scripts/screenshot.py [--out assets/screenshot.png] [--after-step 30]

Launches the app on a free localhost port, types a prompt, presses Generate, waits until the
status line reaches step 24 (codebook 2) and shoots the page (Debian's /usr/bin/chromium via Playwright).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from magnet_demo.layout import launch_local  # noqa: E402
from magnet_demo.ui import DemoApp  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PROMPT = "upbeat funk with slap bass, electric piano and drums at 120 bpm"
TIMEOUT_MS = 300_000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="assets/screenshot.png")
    parser.add_argument("--model", default="embedded")
    parser.add_argument(
        "--wait-for", default="(step 24 of 50)", help="status text to wait for before the shot"
    )
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    demo, url = launch_local(DemoApp(default_model=args.model, output_root=Path(tempfile.mkdtemp())))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1060})
            page.goto(url, wait_until="load")
            page.wait_for_function(
                "() => (document.querySelector('#status')?.innerText || '').includes('Ready.')"
            )
            page.get_by_label("Prompt").fill(PROMPT)
            page.locator("#generate").click()
            page.wait_for_function(
                f"() => (document.querySelector('#status')?.innerText || '').includes({args.wait_for!r})",
                timeout=TIMEOUT_MS,
            )
            page.wait_for_timeout(200)  # let the streamed images paint
            page.screenshot(path=args.out, full_page=False)
            browser.close()
    finally:
        demo.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""The page as a person uses it: headless Debian Chromium (Playwright) against the app on localhost.

Generates with a tiny exported model, scrubs back to an earlier step (the page redraws its canvas
from the data it holds: other pixels; the server sends its sound), reads a token under the
pointer, forks from the step, steers a long run mid-way (the CFG the page shows follows), stops
it, saves a full-page screenshot ($MAGNET_DEMO_SCREENSHOT, else a temp file) and checks that the
page made no request outside localhost.

Needs ``pip install playwright`` and ``apt-get install chromium`` (never ``playwright install``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from urllib.parse import urlparse

import huggingface_hub.constants
import numpy as np
import pytest
import soundfile as sf

from magnet_demo.studio.handlers import DemoApp
from magnet_demo.studio.wiring import launch_local
from magnet_demo.tiny import write_tiny_checkpoint

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOT_ENV = "MAGNET_DEMO_SCREENSHOT"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: generous waits (ms): the machine is shared with training jobs
RUN_TIMEOUT_MS = 120_000
STEP_TIMEOUT_MS = 20_000
#: the page draws a step from data it holds: no server round trip
DRAW_TIMEOUT_MS = 2_000
INSPECT_CANVAS = "document.querySelector('#inspect-canvas .mc-canvas')"


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = write_tiny_checkpoint(tmp_path / "model")
    app = DemoApp(default_model=str(model), output_root=tmp_path / "outputs")
    demo, url = launch_local(app)
    yield url
    demo.close()


@contextmanager
def chromium_page(viewport: dict):
    """A page of headless Debian Chromium, closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport=viewport)
        finally:
            browser.close()


def text_contains(selector: str, text: str) -> str:
    """A JS predicate for page.wait_for_function."""
    return f"() => (document.querySelector({selector!r})?.innerText || '').includes({text!r})"


def open_studio(page, url: str) -> None:
    """Open the page and wait until its load events are done (the model's settings, its duration
    among them, and the expected time): a click or a value set while they still update the page
    may be overwritten or lost (a compare preset pressed straight after "Ready." reached no server
    in 2 of 5 full runs of the suite)."""
    page.goto(url, wait_until="load")
    page.wait_for_function(text_contains("#status", "Ready."))
    page.wait_for_function(text_contains("#expected-time", "with 50 steps"), timeout=STEP_TIMEOUT_MS)


def test_generate_scrub_fork_stop(server, tmp_path):
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.on("request", lambda request: requests.append(request.url))
            page = context.new_page()
            page.goto(server, wait_until="load")
            page.wait_for_function(text_contains("#status", "Ready."))

            # an example fills the prompt; then type our own
            page.get_by_text("A cheerful country song with acoustic guitars").click()
            page.wait_for_function(
                "() => document.querySelector('textarea')?.value === 'A cheerful country song with acoustic guitars'"
            )
            # generate: 20 + 10 + 10 + 10 steps of 10 s, streamed, then audio and inspector
            page.get_by_label("Prompt").fill("an upbeat, happy pop track with piano and drums")
            page.locator("#generate").click()
            page.wait_for_function(text_contains("#status", "Run #1 finished"), timeout=RUN_TIMEOUT_MS)
            page.wait_for_function(text_contains("#inspect-text", "step 50 of 50"), timeout=STEP_TIMEOUT_MS)
            assert page.locator("#final-audio a[href$='.wav']").count() == 1
            page.wait_for_function(f"() => {INSPECT_CANVAS}.dataset.step === '50'")
            last_canvas = page.evaluate(f"() => {INSPECT_CANVAS}.toDataURL()")
            last_sound = page.locator("#step-audio a[href$='.wav']").get_attribute("href")
            assert "total 50/50" in page.locator("#live-canvas .mc-title").inner_text()

            # scrub back to step 5: the page redraws it at once, the server sends its sound
            scrub = page.locator("#scrub input[type=number]")
            scrub.fill("5")
            page.wait_for_function(f"() => {INSPECT_CANVAS}.dataset.step === '5'", timeout=DRAW_TIMEOUT_MS)
            assert page.evaluate(f"() => {INSPECT_CANVAS}.toDataURL()") != last_canvas
            assert "total 5/50" in page.locator("#inspect-canvas .mc-title").inner_text()
            scrub.blur()  # the slider's release event
            page.wait_for_function(text_contains("#inspect-text", "step 5 of 50"), timeout=STEP_TIMEOUT_MS)
            # what is under the pointer: codebook 1 at step 5 holds this step's proposals
            page.locator("#inspect-canvas .mc-canvas").hover(position={"x": 400, "y": 5})
            page.wait_for_function(text_contains("#inspect-canvas .mc-readout", "codebook 1 · frame "))
            readout = page.locator("#inspect-canvas .mc-readout").inner_text()
            assert readout.startswith("codebook 1 · frame ") and " s · " in readout and "token" in readout
            page.wait_for_function(
                "() => { const a = document.querySelector(\"#step-audio a[href$='.wav']\");"
                f" return a && a.getAttribute('href') !== {last_sound!r}; }}"
            )

            # fork from step 5: run #2 decodes the remaining 45 steps, run #1 stays for A/B
            page.locator("#fork").click()
            page.wait_for_function(text_contains("#status", "Run #2 finished"), timeout=RUN_TIMEOUT_MS)
            assert "A/B: run #1" in page.locator("#compare-audio").inner_text()

            # a long second run, stopped after a few steps; the page stays usable
            page.get_by_text("Decoding", exact=True).click()  # open the accordion
            steps = page.get_by_label("Decoding steps per codebook (one number per codebook)")
            steps.fill("150, 80, 80, 80")  # 390 steps: within the server's 400
            page.locator("#generate").click()
            page.wait_for_function(text_contains("#status", "Run #3 · codebook"), timeout=RUN_TIMEOUT_MS)
            # steer it: CFG max 10 -> 3; the steps after the change show CFG at most 3
            cfg_max = page.locator("#cfg-max input[type=number]")
            cfg_max.fill("3")
            cfg_max.blur()
            page.wait_for_function(text_contains("body", "Applied to run #3 from its next step."))
            page.wait_for_function(
                "() => /CFG [0-3]\\.\\d\\d /.test(document.querySelector('#live-canvas .mc-title')?.innerText || '')",
                timeout=STEP_TIMEOUT_MS,
            )
            page.locator("#stop").click()
            page.wait_for_function(text_contains("#status", "Run #3 stopped"), timeout=RUN_TIMEOUT_MS)
            page.wait_for_function(text_contains("#inspect-text", "Run #3"), timeout=STEP_TIMEOUT_MS)

            screenshot = os.environ.get(SCREENSHOT_ENV) or str(tmp_path / "page.png")
            page.screenshot(path=screenshot, full_page=True)
            assert os.path.getsize(screenshot) > 0
        finally:
            browser.close()

    outside = {
        url
        for url in requests
        if urlparse(url).scheme not in ("data", "blob") and urlparse(url).hostname not in LOCAL_HOSTS
    }
    assert requests and not outside, f"requests outside localhost: {sorted(outside)}"


def pixel(page, selector: str, x: float, y: float) -> list[int]:
    """The RGB a person sees at CSS pixel (x, y) of a canvas."""
    return page.evaluate(
        f"""() => {{
            const canvas = document.querySelector({selector!r}), ratio = canvas.width / canvas.clientWidth;
            return Array.from(canvas.getContext('2d').getImageData({x} * ratio, {y} * ratio, 1, 1).data.slice(0, 3));
        }}"""
    )


def drag_across(page, selector: str, start: float, end: float, tries: int = 3) -> float:
    """Drag across the canvas from ``start`` to ``end`` (shares of its frames) until the mode says
    're-decode region'. The page may still scroll after an upload (the canvas moves under the
    pointer): each try scrolls the canvas into view and measures it again. Returns the width of
    the canvas's frames, in pixels."""
    for _ in range(tries):
        page.locator(selector).scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        box = page.locator(selector).bounding_box()
        frames_px = box["width"] - 84 - 12
        page.mouse.move(box["x"] + 84 + start * frames_px, box["y"] + 30)
        page.mouse.down()
        page.mouse.move(box["x"] + 84 + end * frames_px, box["y"] + 40, steps=4)
        page.mouse.up()
        try:
            page.wait_for_function(
                "() => document.querySelector('#mode input:checked')?.value === 're-decode region'",
                timeout=5_000,
            )
            return frames_px
        except Exception:
            continue
    raise AssertionError(f"{tries} drags across the canvas did not pick a region")


def test_upload_redecode_a_region_scrub_and_play(server, tmp_path):
    from playwright.sync_api import sync_playwright

    clip = tmp_path / "clip.wav"
    t = np.arange(4 * 22050) / 22050
    sf.write(clip, 0.3 * np.sin(2 * np.pi * 330 * t), 22050)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            open_studio(page, server)
            page.get_by_text("Audio in: continue a clip").click()
            page.locator("#audio-in input[type=file]").set_input_files(str(clip))
            page.wait_for_function(
                text_contains("#status", "Input audio 'clip.wav' ready"), timeout=STEP_TIMEOUT_MS
            )
            page.wait_for_function(text_contains("#live-canvas .mc-title", "Input audio: 'clip.wav', 4"))

            # drag across the canvas from 1 s to 2 s of its 10 s: the region and the mode follow
            live = "#live-canvas .mc-canvas"
            frames_px = drag_across(page, live, 0.1, 0.2)
            start = float(page.locator("#region-start input[type=number]").input_value())
            end = float(page.locator("#region-end input[type=number]").input_value())
            assert 0.9 <= start <= 1.1 and 1.9 <= end <= 2.1, (start, end)

            page.get_by_label("Prompt").fill("a calm piano melody")
            page.locator("#generate").click()
            page.wait_for_function(text_contains("#status", "Run #1 finished"), timeout=RUN_TIMEOUT_MS)
            assert "re-decodes" in page.locator("#status").inner_text() or "re-decodes" in page.content()
            # codebook 1 after the run: given (input audio) outside the region, decoded inside; the
            # region is shaded while the mode is 're-decode region'
            page.wait_for_function(f"() => {INSPECT_CANVAS}.dataset.step === '50'")
            shaded = pixel(page, live, 84 + 0.15 * frames_px, 10)
            page.locator("#mode").get_by_text("generate", exact=True).click()
            page.wait_for_function(
                "() => document.querySelector('#mode input:checked')?.value === 'generate'"
            )
            page.wait_for_timeout(300)  # a few animation frames
            assert pixel(page, live, 84 + 0.15 * frames_px, 10) == [60, 120, 180] != shaded
            assert pixel(page, live, 84 + 0.05 * frames_px, 10) == [0, 158, 115]
            # past the clip's 4 s the output is decoded too
            assert pixel(page, live, 84 + 0.6 * frames_px, 10) == [60, 120, 180]

            # scrub to step 2: the page redraws it, the server sends its sound
            last = page.evaluate(f"() => {INSPECT_CANVAS}.toDataURL()")
            scrub = page.locator("#scrub input[type=number]")
            scrub.fill("2")
            page.wait_for_function(f"() => {INSPECT_CANVAS}.dataset.step === '2'", timeout=DRAW_TIMEOUT_MS)
            assert page.evaluate(f"() => {INSPECT_CANVAS}.toDataURL()") != last
            scrub.blur()
            page.wait_for_function(text_contains("#inspect-text", "step 2 of 50"), timeout=STEP_TIMEOUT_MS)

            # play the run: its clock moves
            page.locator("#final-audio button[aria-label='Play']").first.click()
            page.wait_for_function(
                "() => document.querySelector('#final-audio #time')?.innerText !== '0:00'",
                timeout=STEP_TIMEOUT_MS,
            )
        finally:
            browser.close()


@pytest.fixture
def paired_server(tmp_path, monkeypatch):
    """The app on a tiny model that offers its own tiny autoregressive partner."""
    from magnet_demo.tiny import write_tiny_rescorer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = write_tiny_checkpoint(tmp_path / "model")
    write_tiny_rescorer(tmp_path / "model" / "rescorer", model)
    app = DemoApp(default_model=str(model), output_root=tmp_path / "outputs")
    demo, url = launch_local(app)
    yield url
    demo.close()


def test_the_compare_preset_streams_three_runs_and_shows_two_canvases(paired_server):
    with chromium_page({"width": 1400, "height": 1100}) as page:
        open_studio(page, paired_server)
        page.get_by_label("Prompt").fill("a calm piano melody")
        # what the status said while the three runs streamed, and the steps the live canvas drew
        page.evaluate(
            """() => { window.seen = []; window.drawn = new Set();
            new MutationObserver(() => {
              const text = document.querySelector('#status')?.innerText || '';
              if (window.seen[window.seen.length - 1] !== text) window.seen.push(text);
              const canvas = document.querySelector('#live-canvas .mc-canvas');
              if (canvas) window.drawn.add(canvas.dataset.step);
            }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true}); }"""
        )
        page.locator("#compare-preset").click()
        page.wait_for_function(
            text_contains("#compare-timing", "run #3 (Autoregressive)"), timeout=3 * RUN_TIMEOUT_MS
        )
        seen = page.evaluate("() => window.seen")
        for phrase in (
            "Run #1** · codebook",
            "Hybrid, autoregressive prefix",
            "Hybrid, MAGNeT phase",
            "autoregressive · record",
        ):
            assert any(phrase.replace("**", "") in text for text in seen), phrase
        assert page.evaluate("() => window.drawn.size") > 10  # the canvas drew steps as they came
        # the table lists the three runs; A and B are drawn one above the other
        table = page.locator("#compare-table").inner_text()
        assert "MAGNeT" in table and "Hybrid" in table and "Autoregressive" in table
        sizes = """() => ['a', 'b'].map((side) => {
              const img = document.querySelector(`#compare-canvas-${side} img`);
              return img && img.complete ? [img.naturalWidth, img.getBoundingClientRect().top] : null; })"""
        # the pictures load after the timings are shown: wait for them (a busy machine is slow)
        page.wait_for_function(f"() => ({sizes})().every((size) => size !== null)", timeout=STEP_TIMEOUT_MS)
        sizes = page.evaluate(sizes)
        assert all(size[0] > 300 for size in sizes), sizes
        assert sizes[0][1] < sizes[1][1]  # stacked: A above B
        assert "x the time of A" in page.locator("#compare-timing").inner_text()


def test_the_expected_time_follows_the_settings_and_the_fast_preset(server):
    with chromium_page({"width": 1400, "height": 1000}) as page:
        page.goto(server, wait_until="load")
        # measured on load (a probe of one step per codebook), for the default 50 steps of 10 s
        page.wait_for_function(text_contains("#expected-time", "with 50 steps"), timeout=STEP_TIMEOUT_MS)
        assert "Expected time: about" in page.locator("#expected-time").inner_text()
        page.locator("#fast-preset").click()
        page.wait_for_function(text_contains("#expected-time", "with 25 steps"), timeout=STEP_TIMEOUT_MS)
        page.get_by_text("Decoding", exact=True).click()  # the accordion with the steps
        assert (
            page.locator("#decoding-steps textarea, #decoding-steps input").first.input_value()
            == "10, 5, 5, 5"
        )
        page.get_by_text("Autoregressive", exact=True).click()
        page.wait_for_function(
            text_contains("#expected-time", "not measured yet for autoregressive runs"),
            timeout=STEP_TIMEOUT_MS,
        )


def test_extend_continues_the_run_shown_on_a_longer_canvas(server):
    with chromium_page({"width": 1400, "height": 1100}) as page:
        open_studio(page, server)  # the model's duration arrives on load: set ours after it
        page.get_by_label("Prompt").fill("calm piano")
        duration = page.locator("#duration input[type=number]")
        duration.fill("4")
        duration.blur()
        page.locator("#generate").click()
        page.wait_for_function(text_contains("#status", "Run #1 finished"), timeout=RUN_TIMEOUT_MS)
        seconds = page.locator("#extend-seconds input")
        seconds.fill("3")
        seconds.blur()
        page.locator("#extend").click()
        page.wait_for_function(text_contains("#status", "Run #2 finished"), timeout=RUN_TIMEOUT_MS)
        assert "A/B: run #1" in page.locator("#compare-audio").inner_text()
        page.wait_for_function(text_contains("#live-canvas .mc-title", "window 1/1"), timeout=STEP_TIMEOUT_MS)
        # the canvas now spans 7 s: the frame under the pointer at its right end is past 4 s
        page.wait_for_function(text_contains("#inspect-text", "Run #2"), timeout=STEP_TIMEOUT_MS)
        page.wait_for_function(text_contains("#inspect-canvas .mc-title", "Run #2"), timeout=STEP_TIMEOUT_MS)
        box = page.locator("#inspect-canvas .mc-canvas").bounding_box()
        page.locator("#inspect-canvas .mc-canvas").hover(position={"x": box["width"] - 14, "y": 5})
        page.wait_for_function(text_contains("#inspect-canvas .mc-readout", "codebook 1 · frame "))
        readout = page.locator("#inspect-canvas .mc-readout").inner_text()
        frame = int(readout.split("frame ")[1].split(" ")[0])
        assert 340 <= frame < 348, readout  # 198 frames given by run #1 (4 s cut to spans), 150 more
        assert "6.96 s, 1 new window, extends #1 by 3 s" in page.locator("#status").inner_text()

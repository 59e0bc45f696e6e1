"""Time to the final audio through the studio vs the engine alone, bytes per step, files per run.

    .venv/bin/python -m bench.ui_latency [--model embedded|FOLDER] [--runs 5] [--duration 10]

Starts the app in this process (the embedded model when present, else a tiny random one), then,
interleaved, ``--runs`` times each, for the same model object, settings and seed:

- ``Engine.decode`` alone, audio included (what the studio runs, without the studio);
- ``/generate`` through ``gradio_client``: from the request to the output that carries the audio;
- headless Chromium on the same machine: from the click on Generate to the audio player.

It also counts the bytes the page received on the run's event stream (per step) and the files
the run wrote (Gradio's cache and the session's folder). Prints medians; the API ratio last.
Targets (issue 20): API <= 1.2x the engine alone, browser <= 1.4x, <= 10 KB per step for one
10 s sample, no file written per step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEMP = Path(tempfile.mkdtemp(prefix="ui-latency-"))
os.environ["GRADIO_TEMP_DIR"] = str(TEMP / "gradio")  # before Gradio is imported: its cache is counted

from bench.space_emulation import GENERATE  # noqa: E402
from magnet_demo.checkpoints import LM_FILE  # noqa: E402
from magnet_demo.engine import Engine  # noqa: E402
from magnet_demo.form import Settings, default_steps, steps_text  # noqa: E402
from magnet_demo.models import EMBEDDED_DIR, EMBEDDED_NAME  # noqa: E402
from magnet_demo.studio.handlers import DemoApp  # noqa: E402
from magnet_demo.studio.page import MainView  # noqa: E402
from magnet_demo.studio.wiring import launch_local  # noqa: E402
from magnet_demo.tiny import write_tiny_checkpoint  # noqa: E402

API_TARGET, BROWSER_TARGET, STEP_BYTES_TARGET = 1.2, 1.4, 10_000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PROMPT = "an upbeat, happy pop track with piano, bass and drums"
SEED = 5
RUN_TIMEOUT_MS = 300_000


def files_under(*folders: Path) -> set[Path]:
    return {p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()}


def engine_seconds(app: DemoApp, settings: dict) -> float:
    """The same model object and the same config as the studio's run of ``settings``."""
    model = app.studio.catalog.load(settings["model"])
    form = Settings(**{key: value for key, value in settings.items() if key in Settings.__dataclass_fields__})
    config = form.config(model, app.studio.limits)
    started = time.perf_counter()
    Engine(model).decode([settings["prompt"]], config, seed=SEED, with_audio=True)
    return time.perf_counter() - started


def api_seconds(client, settings: dict) -> float:
    audio = MainView.position("audio")
    started = time.perf_counter()
    job = client.submit(**settings, api_name="/generate")
    for output in job:
        if isinstance(output[audio], dict) and output[audio].get("value") or isinstance(output[audio], str):
            elapsed = time.perf_counter() - started
            break
    else:
        raise RuntimeError("the run gave no audio")
    job.result()  # let it write its files before the next run
    return elapsed


class Page:
    """A headless Chromium page on the studio, counting the bytes of the event stream."""

    def __init__(self, playwright, url: str, settings: dict):
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        self.stream_bytes = 0
        self._streams: set[str] = set()
        cdp = self.page.context.new_cdp_session(self.page)
        cdp.send("Network.enable")
        cdp.on("Network.responseReceived", self._response)
        cdp.on("Network.dataReceived", self._data)
        self.page.goto(url, wait_until="load")
        self.page.wait_for_function(
            "() => (document.querySelector('#status')?.innerText || '').includes('Ready.')"
        )
        self.page.get_by_label("Prompt").fill(settings["prompt"])
        self.page.get_by_label("Random seed").uncheck()
        self.set_seed(SEED)
        self.runs = 0

    def set_seed(self, seed: int) -> None:
        box = self.page.get_by_label("Seed", exact=True)
        box.fill(str(seed))
        box.blur()

    def _response(self, event: dict) -> None:
        if "/queue/data" in event["response"]["url"]:
            self._streams.add(event["requestId"])

    def _data(self, event: dict) -> None:
        if event["requestId"] in self._streams:
            self.stream_bytes += event["dataLength"]

    def run(self) -> float:
        self.runs += 1
        label = "document.querySelector('#final-audio')?.innerText || ''"
        player = f"(({label}).includes('run #{self.runs}') && !({label}).includes('decoding'))"
        link = "document.querySelector(\"#final-audio a[href$='.wav']\")"
        finished = (
            f"(document.querySelector('#status')?.innerText || '').includes('Run #{self.runs} finished')"
        )
        started = time.perf_counter()
        self.page.locator("#generate").click()
        self.page.wait_for_function(f"() => {player} && {link}", timeout=RUN_TIMEOUT_MS)
        elapsed = time.perf_counter() - started
        self.page.wait_for_function(
            f"() => {finished} && !document.querySelector('#status').innerText.includes('writing')",
            timeout=RUN_TIMEOUT_MS,
        )
        return elapsed

    def close(self) -> None:
        self.browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or folder (default: embedded, else tiny)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()

    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    name = args.model or (
        EMBEDDED_NAME if (EMBEDDED_DIR / LM_FILE).is_file() else str(write_tiny_checkpoint(TEMP / "tiny"))
    )
    outputs = TEMP / "outputs"
    app = DemoApp(default_model=name, output_root=outputs)
    model = app.studio.catalog.load(name)
    total_steps = sum(default_steps(model.num_codebooks))
    settings = {
        **GENERATE,
        "prompt": PROMPT,
        "model": name,
        "duration": args.duration,
        "decoding_steps": steps_text(default_steps(model.num_codebooks)),
        "seed": SEED,
    }
    demo, url = launch_local(app)
    times: dict[str, list[float]] = {"engine": [], "api": [], "browser": []}
    try:
        client = Client(url, verbose=False, download_files=False)
        with sync_playwright() as playwright:
            page = Page(playwright, url, settings)
            engine_seconds(app, settings)  # warm-up: first-call costs stay out of the medians
            api_seconds(client, settings)
            # a seed of its own: Gradio's cache is content-addressed, so a run equal to the
            # warm-ups' would add only the files that differ
            page.set_seed(SEED + 1)
            before, bytes_before = files_under(TEMP / "gradio", outputs), page.stream_bytes
            page.run()
            written = files_under(TEMP / "gradio", outputs) - before
            files_per_run = len(written)
            bytes_per_step = (page.stream_bytes - bytes_before) / total_steps
            page.set_seed(SEED)
            for i in range(args.runs):
                times["engine"].append(engine_seconds(app, settings))
                times["api"].append(api_seconds(client, settings))
                times["browser"].append(page.run())
                print(
                    f"run {i + 1}: engine {times['engine'][-1]:.2f} s, api {times['api'][-1]:.2f} s, "
                    f"browser {times['browser'][-1]:.2f} s",
                    flush=True,
                )
            page.close()
    finally:
        demo.close()

    median = {key: statistics.median(values) for key, values in times.items()}
    kind = "embedded" if name == EMBEDDED_NAME else ("tiny random" if args.model is None else name)
    print(
        f"model: {kind}, {args.duration:g} s, {total_steps} steps, precision {model.precision}, seed {SEED}"
    )
    print(f"median time to the final audio over {args.runs} interleaved runs:")
    for key in ("engine", "api", "browser"):
        print(f"  {key:8s} {median[key]:6.2f} s")
    print(f"bytes the page received per step: {bytes_per_step:,.0f} (target <= {STEP_BYTES_TARGET:,})")
    kinds = ", ".join(sorted(path.name for path in written))
    print(
        f"files written by one run: {files_per_run} for {total_steps} steps (target: none per step): {kinds}"
    )
    browser_ratio = median["browser"] / median["engine"]
    print(f"browser / engine alone: {browser_ratio:.3f} (target <= {BROWSER_TARGET})")
    print(f"API / engine alone: {median['api'] / median['engine']:.3f} (target <= {API_TARGET})")


if __name__ == "__main__":
    main()

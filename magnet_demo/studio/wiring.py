"""The one module that knows both the page and the handlers: it builds the page from the studio's
configuration and declares every event from one table (:func:`endpoints`).

A run endpoint's inputs are built once from :class:`~magnet_demo.form.Settings`' fields, whose
names Gradio uses as the API's parameter names (``inputs_kwargs``); its outputs are
:class:`~magnet_demo.studio.page.MainView` in ``screens.MAIN_OUTPUTS`` order.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import gradio as gr

from magnet_demo.audio_in import MAX_UPLOAD_MB
from magnet_demo.audio_modes import CONTINUE, GENERATE
from magnet_demo.form import LIVE_FIELDS, Settings
from magnet_demo.models import SETTINGS_FIELDS
from magnet_demo.sources import CPU_ONLY_NOTE
from magnet_demo.studio import page
from magnet_demo.studio.handlers import DemoApp
from magnet_demo.studio.page import (
    AudioPanel,
    CompareView,
    InspectPanel,
    MainView,
    PageConfig,
    SettingsPanel,
    ToolIO,
)
from magnet_demo.studio.screens import MAIN_OUTPUTS, TITLE
from magnet_demo.studio.tools import TOOLS, Tools, not_a_tool

#: Gradio's own cache (audio, spectrograms, uploads): every 5 minutes, files older than 15 minutes go
DELETE_CACHE = (300, 900)
#: handlers get the raw values and check them all themselves (form.py): Gradio's own check of a
#: string sent to a number is a generic "the app raised an exception"
RAW = {"preprocess": False}
PRIVATE = {"api_visibility": "private", **RAW}
#: the concurrency group of every decoding event (``--concurrency`` slots)
DECODE_SLOT = "decode"
#: a run's files, after its audio: they wait for a background writer, never for a decoding slot
FILES = dict(concurrency_id="files", concurrency_limit=None, show_progress="hidden")


@dataclass(frozen=True)
class Endpoint:
    """One event: ``trigger`` (a component's event method) runs ``handler``.

    ``inputs`` are positional, ``kwargs`` keyword inputs (their keys are the API's parameter
    names); ``then`` are events that run after it, one after another, each a (handler, inputs,
    outputs) triple or a (handler, inputs, outputs, options) quadruple.
    """

    trigger: Callable
    handler: Callable
    inputs: list
    outputs: list | object
    options: dict
    kwargs: dict = field(default_factory=dict)
    then: tuple = ()


def page_config(app: DemoApp) -> PageConfig:
    """What the page shows of the studio's server, as plain values."""
    studio = app.studio
    catalog = studio.catalog
    model_help = "The embedded model, a Hugging Face MAGNeT, or a local checkpoint folder."
    if not catalog.sources.hub_offered:
        model_help = f"The released MAGNeT models are not listed: {CPU_ONLY_NOTE}"
    return PageConfig(
        limits=studio.limits,
        model_choices=catalog.choices(),
        default_model=catalog.default_model,
        model_help=model_help,
        model_note=studio.model_note,
        examples=catalog.examples_for(catalog.default_model),
    )


def settings_inputs(left: SettingsPanel) -> dict:
    """Every run setting's control, by the setting's name, in :class:`Settings`' order."""
    return {f.name: getattr(left, f.name) for f in fields(Settings)}


def model_outputs(left: SettingsPanel) -> list:
    """``DemoApp.model_changed``'s outputs: info, steps, duration, examples, rescoring, then
    :data:`~magnet_demo.models.SETTINGS_FIELDS`' controls in its order."""
    first = [left.model_info, left.decoding_steps, left.duration, left.examples, left.rescore_weight]
    return first + [getattr(left, name) for name in SETTINGS_FIELDS]


def _waiting(demo: gr.Blocks, session_hash: str | None) -> int:
    """Runs of ``session_hash`` waiting in ``demo``'s queue for a decoding slot (Gradio's queue)."""
    queue = getattr(demo, "_queue", None)
    events = getattr(queue, "event_queue_per_concurrency_id", {}).get(DECODE_SLOT)
    return sum(1 for event in getattr(events, "queue", ()) if event.session_hash == session_hash)


def _admission(app: DemoApp, demo: gr.Blocks, handler: Callable, *, per_visitor: bool = True) -> Callable:
    """A validator for ``handler``'s event: Gradio calls it before the request joins the queue,
    with the handler's inputs and request (hence the handler's signature). It refuses a second run
    of a visitor (unless not ``per_visitor``: the tools, whose calls open sessions of their own)
    and input audio whose header the server refuses (read no further)."""

    signature = inspect.signature(handler)

    @functools.wraps(handler)
    def admit(*args, **kwargs):
        values = [*args, *kwargs.values()]
        request = next((value for value in values if isinstance(value, gr.Request)), None)
        named = signature.bind_partial(*args, **kwargs).arguments
        # /continue and /inpaint always take audio; /generate when its mode says so
        with_audio = named.get("mode", CONTINUE if "audio" in named else GENERATE) not in (None, "", GENERATE)
        audio = named.get("audio") if with_audio else None
        key = getattr(request, "session_hash", None)
        refusal = app.admit(request, _waiting(demo, key), audio) if per_visitor else app.admit(None, 0, audio)
        # one verdict per input; a refusal is shown on the first (the prompt, the audio, the run)
        verdicts = [gr.validate(True, "") for value in values if not isinstance(value, gr.Request)]
        if refusal is not None and verdicts:
            verdicts[0] = gr.validate(False, refusal)
        return verdicts

    return admit


def endpoints(
    app: DemoApp,
    demo: gr.Blocks,
    left: SettingsPanel,
    audio: AudioPanel,
    main: MainView,
    inspect: InspectPanel,
    lab: CompareView,
    io: ToolIO,
) -> dict[str | None, list[Endpoint]]:
    """Every event of the page, by API name (None: private ones)."""
    # Gradio's progress overlay (queue position, timer) on the status line only: on every output
    # it repaints the whole page many times a second, CPU the decoding needs
    decoding = dict(
        concurrency_id=DECODE_SLOT, show_progress="minimal", show_progress_on=[main.status], **RAW
    )
    run = {**settings_inputs(left), "sample_shown": inspect.sample_shown}
    audio_in = {
        name: getattr(audio, name) for name in ("mode", "audio", "keep_seconds", "region_start", "region_end")
    }
    step = (app.inspect, [main.runs, main.scrub, inspect.sample_shown], inspect.outputs())
    outputs = main.outputs()
    # the spectrogram, trace and animation, after the run has left the decoding slot
    files = (app.run_files, [inspect.sample_shown], outputs, FILES)
    expect = (app.views.expected_time, expected_inputs(left), left.expected)

    def run_endpoint(trigger, handler, inputs, kwargs, **options) -> Endpoint:
        options = {**decoding, "validator": _admission(app, demo, handler), **options}
        return Endpoint(trigger, handler, inputs, outputs, options, kwargs, then=(files, step, expect))

    steer = dict(queue=False, **RAW)
    latest = (app.views.compare_latest, [inspect.sample_shown], lab.outputs())
    pair = [lab.run_a, lab.run_b, inspect.sample_shown]
    return {
        "model_info": [Endpoint(left.model.change, app.model_changed, [left.model, left.duration], model_outputs(left), RAW)],
        # a click while a run (or the writing of its files) is pending starts one run after it:
        # Gradio's default would ignore it without a word
        "generate": [run_endpoint(left.generate.click, app.generate, [], {**run, **audio_in}, trigger_mode="always_last")],
        "fork": [run_endpoint(inspect.fork.click, app.fork, [main.runs, main.scrub], run)],
        "extend": [run_endpoint(inspect.extend.click, app.extend, [main.runs, inspect.extend_seconds], {"sample_shown": inspect.sample_shown})],
        # the other two modes as endpoints of their own (the page's button reaches them through
        # /generate's mode): audio file in, the outputs of /generate
        "continue": [run_endpoint(gr.Button(visible=False).click, app.continue_clip, [audio.audio, audio.keep_seconds], run)],
        "inpaint": [
            run_endpoint(gr.Button(visible=False).click, app.inpaint, [audio.audio, audio.region_start, audio.region_end], run)
        ],
        # three runs one after another on the decoding slot, then the compare view shows them
        "compare_methods": [
            dataclasses.replace(
                run_endpoint(lab.preset.click, app.compare_methods, [], run), then=(files, latest, expect)
            )
        ],
        "compare": [Endpoint(lab.show.click, app.views.compare, pair, lab.outputs(), RAW)],
        "stop": [Endpoint(left.stop.click, app.stop, [], left.steer_note, dict(queue=False))],
        "steer": [Endpoint(left.cfg_schedule.change, app.steer, [], left.steer_note, steer, {n: getattr(left, n) for n in LIVE_FIELDS})],
        "step": [Endpoint(main.scrub.release, *step, RAW)],
        "show_run": [Endpoint(main.runs.input, app.show_run, [main.runs, inspect.sample_shown], outputs, RAW, then=(step,))],
        **_tools(app, demo, io),
        None: _private(app, demo, left, audio, main, inspect, step),
    }  # fmt: skip


def _tools(app: DemoApp, demo: gr.Blocks, io: ToolIO) -> dict[str, list[Endpoint]]:
    """The tools' endpoints (:mod:`magnet_demo.studio.tools`): whole runs on the decoding slot."""
    tools = Tools(app)
    common = [io.prompt, io.duration, io.seed]
    inputs = {
        "generate_music": [*common, io.method, io.model],
        "continue_music": [io.audio, io.keep_seconds, *common, io.model],
        "redecode_region": [io.audio, io.region_start, io.region_end, io.prompt, io.seed, io.model],
        "extend_music": [io.clip, io.seconds],
    }
    options = dict(concurrency_id=DECODE_SLOT, show_progress="hidden", **RAW)
    return {
        name: [
            Endpoint(trigger.click, handler, inputs[name], io.outputs(), {**options, "validator": _admission(app, demo, handler, per_visitor=False)})
        ]
        for name, trigger in zip(TOOLS, io.triggers, strict=True)
        for handler in [getattr(tools, name)]
    }  # fmt: skip


def expected_inputs(left: SettingsPanel) -> list:
    """``DemoApp.expected_time``'s inputs: the settings a run's cost depends on."""
    return [
        left.model, left.duration, left.decoding_steps, left.samples, left.method, left.prefix_seconds,
        left.overlap_seconds,
    ]  # fmt: skip


def _expected(app: DemoApp, demo: gr.Blocks, left: SettingsPanel) -> list[Endpoint]:
    """The expected time follows the settings it depends on; the fast preset sets fewer steps."""
    triggers = (
        demo.load, left.model.change, left.duration.release, left.samples.release, left.decoding_steps.change,
        left.method.change, left.prefix_seconds.release, left.overlap_seconds.release,
    )  # fmt: skip
    expect = [
        Endpoint(trigger, app.views.expected_time, expected_inputs(left), left.expected, PRIVATE)
        for trigger in triggers
    ]
    return [
        *expect,
        Endpoint(left.fast.click, app.views.fast_steps, [left.model], left.decoding_steps, PRIVATE),
    ]


def _private(app, demo, left, audio, main, inspect, step) -> list[Endpoint]:
    """The page's own events (not in the API)."""
    live = {name: getattr(left, name) for name in LIVE_FIELDS}
    steer = [
        Endpoint(trigger, app.steer, [], left.steer_note, dict(queue=False, **PRIVATE), live)
        for trigger in (
            left.max_cfg_coef.release, left.min_cfg_coef.release, left.temperature.release,
            left.rescore_weight.release, left.cfg_curve.submit, left.cfg_curve.blur,
        )
    ]  # fmt: skip
    show = [main.runs, inspect.sample_shown]
    return [
        Endpoint(left.examples.click, lambda values: values[0], [left.examples], left.prompt, {"api_visibility": "private"}),
        Endpoint(demo.load, app.model_changed, [left.model, left.duration], model_outputs(left), PRIVATE),
        Endpoint(audio.use_run.click, app.use_run_audio, show, audio.audio, PRIVATE),
        Endpoint(audio.audio.change, app.audio_preview, [audio.audio, left.model, left.duration], [main.canvas, main.status], PRIVATE),
        *steer,
        Endpoint(inspect.sample_shown.release, app.show_run, show, main.outputs(), PRIVATE, then=(step,)),
        *_expected(app, demo, left),
    ]  # fmt: skip


def declare(name: str | None, endpoint: Endpoint, concurrency_limit: int) -> None:
    """Declare one event with Gradio (named ``name`` in the API unless None)."""
    options = dict(endpoint.options)
    if name not in TOOLS:
        not_a_tool(endpoint.handler)  # the page's streams and controls are no tools for assistants
    if options.get("concurrency_id") == DECODE_SLOT:
        options["concurrency_limit"] = concurrency_limit
    if name is not None:
        options["api_name"] = name
    kwargs = {"inputs_kwargs": endpoint.kwargs} if endpoint.kwargs else {}
    event = endpoint.trigger(endpoint.handler, endpoint.inputs, endpoint.outputs, **kwargs, **options)
    for handler, inputs, outputs, *more in endpoint.then:
        event = event.then(handler, inputs, outputs, **{**PRIVATE, **(more[0] if more else {})})


def build_ui(app: DemoApp, *, concurrency_limit: int = 1) -> gr.Blocks:
    """Lay out the page and declare its events.

    ``concurrency_limit`` decodings run at once (others wait in the queue); stop, steering and
    inspecting never wait behind a decoding.
    """
    config = page_config(app)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        page.intro()
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=320):
                left, audio = page.settings_panel(config)
            with gr.Column(scale=2, min_width=480):
                main, inspect = page.main_panel(config, left.seed)
                lab = page.compare_panel()
        io = page.tool_io(len(TOOLS))
        assert [f.name for f in fields(MainView)] == list(MAIN_OUTPUTS)  # noqa: S101  (one order)
        for name, events in endpoints(app, demo, left, audio, main, inspect, lab, io).items():
            for endpoint in events:
                declare(name, endpoint, concurrency_limit)
        demo.unload(app.forget)
    return demo


def launch_local(app: DemoApp, *, queue_size: int = 8, mcp: bool = False) -> tuple[gr.Blocks, str]:
    """Serve ``app`` on a free localhost port in the background (tests, screenshots); ``mcp``:
    also as an MCP server (the tools at ``URL + gradio_api/mcp/``).

    Returns the running Blocks (call ``.close()`` when done) and its URL.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = build_ui(app)
    demo.queue(max_size=queue_size, api_open=False)
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=[str(app.studio.sessions.root)],
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        mcp_server=mcp,
    )
    return demo, f"http://127.0.0.1:{port}/"

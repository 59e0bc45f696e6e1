"""The studio as an MCP server: a real MCP client (the ``mcp`` package, streamable HTTP) lists the
tools, reads their argument schemas, generates 2 s on a tiny model and gets the audio back; a bad
argument comes back as a readable tool error. The page's own endpoints are no tools."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import urllib.request

import pytest
import soundfile as sf

from magnet_demo.studio.handlers import DemoApp
from magnet_demo.studio.tools import TOOLS
from magnet_demo.studio.wiring import launch_local
from magnet_demo.tiny import write_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def server(tmp_path_factory, hub_offline):
    root = tmp_path_factory.mktemp("mcp")
    model = write_tiny_checkpoint(root / "model")
    demo, url = launch_local(DemoApp(default_model=str(model), output_root=root / "outputs"), mcp=True)
    yield url
    demo.close()


async def _session(url: str, work):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url + "gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)


def run(url: str, work):
    return asyncio.run(_session(url, work))


def test_the_tools_are_listed_with_their_arguments(server):
    tools = run(server, lambda session: session.list_tools())
    by_name = {tool.name: tool for tool in tools.tools}
    assert sorted(by_name) == sorted(TOOLS)  # generate, stop, steer, step, ... are the page's own
    generate = by_name["generate_music"]
    assert "MAGNeT" in generate.description
    properties = generate.inputSchema["properties"]
    assert list(properties) == ["prompt", "duration", "seed", "method", "model"]
    assert "genre, instruments, mood" in properties["prompt"]["description"]
    assert "'hybrid'" in properties["method"]["description"]
    assert generate.inputSchema["required"] == ["prompt"]
    region = by_name["redecode_region"].inputSchema["properties"]
    assert list(region)[:3] == ["audio", "region_start", "region_end"]
    extend = by_name["extend_music"].inputSchema
    assert list(extend["properties"]) == ["clip", "seconds"] and extend["required"] == ["clip"]
    assert "the 'clip' id of an earlier answer" in extend["properties"]["clip"]["description"]


def _audio_of(result) -> tuple[bytes | None, str]:
    """The WAV bytes a tool result carries (inline, or at its URL) and its text."""
    texts, wav = [], None
    for item in result.content:
        if item.type == "audio":
            wav = base64.b64decode(item.data)
        elif item.type == "text":
            texts.append(item.text)
    urls = re.findall(r"http[^'\"\s]+\.wav", "\n".join(texts))
    if wav is None and urls:  # Gradio answers a file with its URL on the server
        with urllib.request.urlopen(urls[0]) as response:  # noqa: S310 (our local server)
            wav = response.read()
    return wav, "\n".join(texts)


def test_an_assistant_generates_two_seconds_and_gets_the_audio(server):
    arguments = {"prompt": "calm piano", "duration": 2, "seed": 11}
    result = run(server, lambda session: session.call_tool("generate_music", arguments))
    assert not result.isError, result.content
    wav, text = _audio_of(result)
    assert wav is not None, text
    samples, rate = sf.read(io.BytesIO(wav))
    assert rate == 32000 and abs(len(samples) / rate - 1.98) < 0.05  # 99 frames at 50 Hz (3-frame spans)
    assert "11" in text and "finished" in text  # the seed and the run's summary


def _clip_of(text: str) -> str:
    """The 'clip' id of a tool answer's summary."""
    return re.search(r"['\"]clip['\"]: ['\"]([0-9a-f]{24}-\d+)['\"]", text).group(1)


def _error_text(result) -> str:
    return " ".join(item.text for item in result.content if item.type == "text")


def test_an_assistant_extends_a_clip_it_made(server):
    async def work(session):
        made = await session.call_tool("generate_music", {"prompt": "calm piano", "duration": 2, "seed": 4})
        clip = _clip_of(_audio_of(made)[1])
        extended = await session.call_tool("extend_music", {"clip": clip, "seconds": 1})
        again = await session.call_tool(
            "extend_music", {"clip": _clip_of(_audio_of(extended)[1]), "seconds": 1}
        )
        return clip, extended, again

    clip, extended, again = run(server, work)
    assert clip.endswith("-1") and not extended.isError and not again.isError, extended.content
    wav, text = _audio_of(extended)
    samples, rate = sf.read(io.BytesIO(wav))
    assert abs(len(samples) / rate - 2.94) < 0.01  # 99 frames, then 48 more (1 s cut to spans)
    assert "extends" in text and "finished" in text
    assert _clip_of(text) == clip[:-1] + "2"  # the extension: run 2 of the clip's own session
    wav, text = _audio_of(again)
    assert abs(len(sf.read(io.BytesIO(wav))[0]) / rate - 3.90) < 0.01 and _clip_of(text) == clip[:-1] + "3"


def test_assistants_neither_reach_nor_wait_for_each_others_clips(server):
    """Gradio's MCP server calls the app through one client (one Gradio session) for everyone:
    each clip is a session of its own, reached by its unguessable id only."""

    async def one(seed: int):
        arguments = {"prompt": "calm piano", "duration": 2, "seed": seed}
        return await _session(server, lambda session: session.call_tool("generate_music", arguments))

    async def both():
        return await asyncio.gather(one(21), one(22))

    first, second = asyncio.run(both())  # two assistants at once: neither is refused
    assert not first.isError and not second.isError, (first.content, second.content)
    clips = [_clip_of(_audio_of(result)[1]) for result in (first, second)]
    assert clips[0] != clips[1] and all(clip.endswith("-1") for clip in clips)
    for clip, message in [
        ("1", "clip must be the 'clip' of an earlier answer"),  # a run number reaches nobody's run
        ("0" * 24 + "-1", "No clip '000000000000000000000000-1' on this server"),
        (clips[0][:-1] + "7", f"No clip '{clips[0][:-1]}7' on this server"),
    ]:
        result = run(
            server, lambda session, c=clip: session.call_tool("extend_music", {"clip": c, "seconds": 1})
        )
        assert result.isError and message in _error_text(result), _error_text(result)


def test_a_bad_argument_is_a_readable_tool_error(server):
    arguments = {"prompt": "calm piano", "duration": 2, "method": "diffusion"}
    result = run(server, lambda session: session.call_tool("generate_music", arguments))
    assert result.isError
    text = _error_text(result)
    assert "Method must be one of magnet, hybrid, autoregressive" in text
    assert "Traceback" not in text and "/tmp/" not in text


def test_the_schema_route_marks_only_the_tools_as_tools(server):
    with urllib.request.urlopen(server + "gradio_api/mcp/schema") as response:  # noqa: S310
        schema = json.loads(response.read())
    tools = [entry["name"] for entry in schema if entry["meta"]["mcp_type"] == "tool"]
    assert sorted(tools) == sorted(TOOLS)  # the others are marked, for the Hub's MCP server too


def test_a_crafted_audio_file_is_refused_before_the_queue_with_a_readable_error(server):
    header = b"RIFF\xff\xff\xff\x7fWAVEfmt "  # a WAV header claiming 2 GiB, then nothing of the kind
    crafted = "data:audio/wav;base64," + base64.b64encode(header + bytes(7000)).decode()
    arguments = {"audio": crafted, "keep_seconds": 1, "prompt": "calm piano", "duration": 2}
    result = run(server, lambda session: session.call_tool("continue_music", arguments))
    assert result.isError
    assert _error_text(result) == (
        "1 parameter(s) failed validation:\n- audio: Could not read 'file.wav': it is not a valid WAV file."
    )

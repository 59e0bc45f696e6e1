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


def test_an_assistant_extends_a_clip_it_made(server):
    async def work(session):
        made = await session.call_tool("generate_music", {"prompt": "calm piano", "duration": 2, "seed": 4})
        _, text = _audio_of(made)
        number = int(re.search(r"['\"]run['\"]: (\d+)", text).group(1))  # the summary's run number
        return made, await session.call_tool("extend_music", {"run": number, "seconds": 1})

    made, extended = run(server, work)
    assert not made.isError and not extended.isError, extended.content
    wav, text = _audio_of(extended)
    samples, rate = sf.read(io.BytesIO(wav))
    assert abs(len(samples) / rate - 2.94) < 0.01  # 99 frames, then 48 more (1 s cut to spans)
    assert "extends" in text and "finished" in text


def test_a_bad_argument_is_a_readable_tool_error(server):
    arguments = {"prompt": "calm piano", "duration": 2, "method": "diffusion"}
    result = run(server, lambda session: session.call_tool("generate_music", arguments))
    assert result.isError
    text = " ".join(item.text for item in result.content if item.type == "text")
    assert "Method must be one of magnet, hybrid, autoregressive" in text
    assert "Traceback" not in text and "/tmp/" not in text


def test_the_schema_route_marks_only_the_tools_as_tools(server):
    with urllib.request.urlopen(server + "gradio_api/mcp/schema") as response:  # noqa: S310
        schema = json.loads(response.read())
    tools = [entry["name"] for entry in schema if entry["meta"]["mcp_type"] == "tool"]
    assert sorted(tools) == sorted(TOOLS)  # the others are marked, for the Hub's MCP server too

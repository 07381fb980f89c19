"""Ollama's /api routes through the official ollama client, against a loopback upstream."""

import time

import httpx
import ollama
import pytest


@pytest.fixture
def client(guard):
    client = ollama.Client(host=guard.url)
    yield client
    client._client.close()


def test_chat_streams_by_default_and_can_be_whole(client, upstream):
    pieces = [
        part.message.content
        for part in client.chat(
            model="olm", messages=[{"role": "user", "content": "how are you"}], stream=True
        )
    ]
    assert "".join(pieces) == "echo: how are you"
    assert len(pieces) > 2
    whole = client.chat(model="olm", messages=[{"role": "user", "content": "x"}])
    assert whole.message.content == "echo: x"
    assert upstream.requests[-1].path == "/api/chat"
    assert upstream.requests[-1].json()["model"] == "fake-model"


def test_generate_embed_and_tool_calls(client, upstream):
    assert client.generate(model="olm", prompt="go").response == "echo: go"
    streamed = "".join(p.response for p in client.generate(model="olm", prompt="a b", stream=True))
    assert streamed == "echo: a b"
    assert len(client.embed(model="olm", input=["a", "b"]).embeddings) == 2
    upstream.behaviour.tool_call = {"name": "weather", "arguments": {"city": "Oslo"}}
    reply = client.chat(model="olm", messages=[{"role": "user", "content": "?"}])
    assert reply.message.tool_calls[0].function.arguments == {"city": "Oslo"}


def test_tags_lists_configured_models_with_licences(client):
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"m1", "llama", "olm"}
    raw = httpx.get(f"{client._client.base_url}/api/tags").json()
    olm = next(m for m in raw["models"] if m["name"] == "olm")
    assert olm["guard"]["licence"]["id"] == "mit"


def test_ollama_upstream_also_serves_v1(guard, upstream):
    r = httpx.post(
        f"{guard.url}/v1/chat/completions",
        json={"model": "olm", "messages": [{"role": "user", "content": "v"}]},
    )
    assert r.status_code == 200
    assert upstream.requests[-1].path == "/v1/chat/completions"


def test_api_route_to_an_openai_upstream_is_refused_in_ollama_shape(guard, upstream):
    r = httpx.post(
        f"{guard.url}/api/chat",
        json={"model": "m1", "messages": [{"role": "user", "content": "v"}]},
    )
    assert r.status_code == 400
    assert "use the /v1 routes" in r.json()["error"]
    assert upstream.requests == []


def test_unknown_model_in_ollama_shape(client, upstream):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404
    assert "nope" in err.value.error


def test_ndjson_stream_arrives_line_by_line(client, upstream):
    upstream.behaviour.chunk_delay = 0.15
    started = time.perf_counter()
    arrivals = [
        time.perf_counter() - started
        for _ in client.chat(
            model="olm", messages=[{"role": "user", "content": "one two three four"}], stream=True
        )
    ]
    assert len(arrivals) >= 5
    # The first line reached the client long before the upstream finished the stream.
    assert arrivals[0] < arrivals[-1] - 0.5

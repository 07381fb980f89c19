"""The /v1 routes through the official openai client and raw HTTP, against a loopback upstream."""

import json
import time

import httpx
import openai
import pytest


@pytest.fixture
def client(guard):
    with openai.OpenAI(base_url=f"{guard.url}/v1", api_key="guard-key", max_retries=0) as client:
        yield client


def test_chat_completion(client, upstream):
    reply = client.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hello there"}]
    )
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.usage.total_tokens > 0
    assert upstream.requests[-1].path == "/v1/chat/completions"


def test_chat_stream_arrives_chunk_by_chunk(client, upstream):
    upstream.behaviour.chunk_delay = 0.15
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model="m1",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals, pieces, usage = [], [], None
    for chunk in stream:
        arrivals.append(time.perf_counter() - started)
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(pieces) == "echo: one two three four"
    assert usage is not None and usage.completion_tokens == 5
    # The first chunk reached the client long before the upstream finished the stream.
    assert arrivals[0] < arrivals[-1] - 0.5


def test_completions_and_embeddings(client, upstream):
    text = client.completions.create(model="m1", prompt="say it").choices[0].text
    assert text == "echo: say it"
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="m1", prompt="p q", stream=True)
        if c.choices
    )
    assert streamed == "echo: p q"
    embedded = client.embeddings.create(model="m1", input=["a", "b"])
    assert [len(d.embedding) for d in embedded.data] == [8, 8]


def test_models_list_carries_licences(client):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"m1", "llama", "olm"}
    licence = models["llama"].model_extra["guard"]["licence"]
    assert {k: v for k, v in licence.items() if k != "restrictions"} == {
        "id": "llama3.1",
        "name": "Llama 3.1 Community License Agreement",
        "commercial_use": True,
        "attribution_required": True,
        "share_alike": True,
        "user_threshold": 700_000_000,
        "catalogued": True,
        "source_url": "https://example.org/llama",
        "revision": "abc123",
    }
    assert any("Acceptable Use Policy" in term for term in licence["restrictions"])


def test_body_passes_with_unknown_fields_unchanged_in_meaning(guard, upstream):
    # Scanned bodies go on as guard parsed them (what was scanned is what is sent), so
    # the bytes may differ (spacing, escapes, 2.50 -> 2.5); the JSON does not.
    body = (
        b'{"model": "m1", "messages": [{"role": "user", "content": "x"}], '
        b'"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}], '
        b'"response_format": {"type": "json_object"}, "logprobs": true, "top_logprobs": 2, '
        b'"stream_options": null, "x_vendor": {"deep": [1, 2.50, "\\u00e9"]}}'
    )
    upstream.behaviour.extra_response_fields = {"x_server": {"k": [1, 2]}, "prompt_logprobs": None}
    r = httpx.post(
        f"{guard.url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200
    assert json.loads(upstream.requests[-1].body) == json.loads(body)
    assert r.json()["x_server"] == {"k": [1, 2]}
    assert "prompt_logprobs" in r.json()


def test_model_name_is_mapped_to_the_upstream_name(client, upstream):
    client.chat.completions.create(
        model="llama",
        messages=[{"role": "user", "content": "x"}],
        tools=[{"type": "function", "function": {"name": "f"}}],
    )
    sent = upstream.requests[-1].json()
    assert sent["model"] == "meta/llama-3.1-8b"
    assert sent["tools"] == [{"type": "function", "function": {"name": "f"}}]


def test_tool_calls_round_trip(client, upstream):
    upstream.behaviour.tool_call = {"name": "lookup", "arguments": {"city": "Oslo"}}
    reply = client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "?"}])
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}


def test_unknown_model_is_404_in_openai_format(client, upstream):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == "model_not_found"
    assert err.value.body["param"] == "model"
    assert upstream.requests == []


def test_stream_without_done_marker_ends_and_guard_invents_none(guard, upstream):
    upstream.behaviour.send_done = False
    r = httpx.post(
        f"{guard.url}/v1/chat/completions",
        json={"model": "m1", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200
    assert b"[DONE]" not in r.content
    assert r.content.count(b"data: ") >= 3
    upstream.behaviour.send_done = True
    r = httpx.post(
        f"{guard.url}/v1/chat/completions",
        json={"model": "m1", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.content.endswith(b"data: [DONE]\n\n")

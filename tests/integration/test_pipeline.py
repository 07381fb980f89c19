"""The exchange pipeline: registered detectors see every text; the policy blocks or redacts."""

import json

import httpx
import openai
import pytest

from guard.detectors import Direction
from tests.conftest import make_settings
from tests.fakes.detectors import MarkerPolicy, marker_registry
from tests.fakes.policies import needing


@pytest.fixture
def guarded(guard_at, upstream):
    """guard with the marker detector on both directions and the marker policy."""
    registry, made = marker_registry()
    settings = make_settings(
        upstream.base_url, detectors={"marker": {}}, scan={"stream_window_chars": 40}
    )
    server = guard_at(settings, registry=registry, policy=MarkerPolicy())
    return server, made["marker"]


def chat(url, content, **extra):
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "m1", "messages": [{"role": "user", "content": content}], **extra},
    )


def test_detector_sees_input_and_output_texts(guarded, upstream):
    server, detector = guarded
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={
            "model": "m1",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "part one"}]},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "t",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"q":1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "t", "content": "tool says hi"},
            ],
        },
    )
    assert r.status_code == 200
    assert detector.texts(Direction.INPUT) == ["be brief", "part one", '{"q":1}', "tool says hi"]
    assert detector.texts(Direction.OUTPUT) == ["echo: part one"]


def test_detector_sees_streamed_output(guarded, upstream):
    server, detector = guarded
    r = chat(server.url, "alpha beta gamma", stream=True)
    assert r.status_code == 200
    # Each scan is a stretch of the answer (after the first, with the end of the
    # text already released in front, for context); together they cover all of it.
    answer = "echo: alpha beta gamma"
    scanned = detector.texts(Direction.OUTPUT)
    assert scanned and all(text in answer for text in scanned)
    assert scanned[0].startswith("echo") and scanned[-1].endswith("gamma")
    pieces = [
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in r.text.split("\n\n")
        if line.startswith("data: {")
    ]
    assert "".join(pieces) == "echo: alpha beta gamma"


def test_block_on_input_stops_the_upstream_call(guarded, upstream):
    server, _ = guarded
    with (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as client,
        pytest.raises(openai.PermissionDeniedError) as err,
    ):
        client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "a forbidden thing"}]
        )
    assert err.value.status_code == 403
    assert err.value.body["message"] == "Blocked: forbidden word in input"
    assert err.value.body["code"] == "content_policy_violation"
    assert upstream.requests == []
    r = httpx.post(
        f"{server.url}/api/chat",
        json={"model": "olm", "messages": [{"role": "user", "content": "forbidden"}]},
    )
    assert r.status_code == 403
    assert r.json() == {"error": "Blocked: forbidden word in input"}
    assert upstream.requests == []


def test_redaction_rewrites_what_the_upstream_receives(guarded, upstream):
    server, _ = guarded
    upstream.behaviour.reply_text = "fine"
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={
            "model": "m1",
            "logprobs": True,
            "x_extra": {"a": 1},
            "messages": [{"role": "user", "content": "my key is secret-abcd ok"}],
        },
    )
    assert r.status_code == 200
    sent = upstream.requests[-1].json()
    assert sent["messages"][0]["content"] == "my key is <SECRET> ok"
    assert sent["x_extra"] == {"a": 1}
    assert sent["logprobs"] is True
    assert b"secret-abcd" not in upstream.requests[-1].body


def test_redaction_of_the_answer(guarded, upstream):
    server, _ = guarded
    upstream.behaviour.reply_text = "the code is secret-wxyz."
    assert (
        chat(server.url, "?").json()["choices"][0]["message"]["content"] == "the code is <SECRET>."
    )
    r = chat(server.url, "?", stream=True)
    assert "secret-wxyz" not in r.text
    pieces = [
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in r.text.split("\n\n")
        if line.startswith("data: {")
    ]
    assert "".join(pieces) == "the code is <SECRET>."


def test_block_on_output(guarded, upstream):
    server, _ = guarded
    upstream.behaviour.reply_text = "this is forbidden"
    r = chat(server.url, "?")
    assert r.status_code == 403
    assert r.json()["error"]["message"] == "Blocked: forbidden word in output"


def test_block_mid_stream_ends_with_content_filter(guarded, upstream):
    server, _ = guarded
    upstream.behaviour.reply_text = "All good here. Then something forbidden appears. More text."
    r = chat(server.url, "?", stream=True)
    assert r.status_code == 200
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    final = json.loads(events[-2][6:])
    assert final["choices"][0]["finish_reason"] == "content_filter"
    text = "".join(
        json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-2]
    )
    assert text == "All good here. "
    assert "forbidden" not in r.text


def test_block_mid_stream_on_ollama(guarded, upstream):
    server, _ = guarded
    upstream.behaviour.reply_text = "Fine start. Now forbidden words. Rest."
    r = httpx.post(
        f"{server.url}/api/chat",
        json={"model": "olm", "messages": [{"role": "user", "content": "?"}]},
    )
    lines = [json.loads(line) for line in r.text.splitlines() if line]
    assert lines[-1]["done"] is True
    assert lines[-1]["done_reason"] == "content_filter"
    assert "forbidden" not in r.text


def guarded_by(tmp_path, guard_at, upstream, name, **settings):
    """guard with a policy bundle whose one rule needs the detector ``name``."""
    registry, _ = marker_registry()
    policy = needing(tmp_path / "policies", name)
    config = make_settings(upstream.base_url, policy=policy, **settings)
    return guard_at(config, registry=registry)


def test_failing_detector_fails_closed(tmp_path, guard_at, upstream):
    server = guarded_by(tmp_path, guard_at, upstream, "broken")
    r = chat(server.url, "hello")
    assert r.status_code == 503
    assert "could not be checked" in r.json()["error"]["message"]
    assert upstream.requests == []


def test_slow_detector_times_out_and_fails_closed(tmp_path, guard_at, upstream):
    slow = {"detectors": {"marker": {"delay": 1.0}}, "scan": {"timeout": 0.1}}
    server = guarded_by(tmp_path, guard_at, upstream, "marker", **slow)
    assert chat(server.url, "hello").status_code == 503
    assert upstream.requests == []


def test_unknown_detector_stops_the_start(upstream):
    from guard.app import create_app
    from guard.errors import ConfigError

    with pytest.raises(ConfigError, match=r"detectors\.nope: unknown detector"):
        create_app(make_settings(upstream.base_url, detectors={"nope": {}}))

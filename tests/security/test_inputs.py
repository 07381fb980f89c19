"""Bodies and headers built to confuse the proxy: too large, too deep, not UTF-8,
numbers no parser agrees on, keys given twice, line breaks in names, and clients
that send slowly. Each gets a clear error (or is guarded as usual) and nothing
unscanned reaches the model server."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from tests.conftest import make_settings
from tests.security.conftest import raw_request, read_response, status_of

CARD = "4111 1111 1111 1111"


def chat_bytes(*contents: str, model: str = "m1") -> bytes:
    messages = [{"role": "user", "content": c} for c in contents]
    return json.dumps({"model": model, "messages": messages}).encode()


def send(guard, key: str, body: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    return httpx.post(f"{guard.url}{path}", content=body, headers=headers, timeout=10)


def error_of(r: httpx.Response) -> dict:
    body = r.json()["error"]
    assert isinstance(body["message"], str) and body["message"]
    return body


def test_an_oversized_body_is_413_before_it_is_read(strict, sealed, suite_keys):
    body = chat_bytes("x" * (128 * 1024))
    r = send(strict, suite_keys.client, body)
    assert r.status_code == 413
    assert error_of(r)["code"] == "request_too_large"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            b'{"model": "m1", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", id="deep-list"
        ),
        pytest.param(b'{"a":' * 5_000 + b"1" + b"}" * 5_000, id="deep-object"),
        pytest.param(
            b'{"model": "m1", "messages": [{"role": "user", "content": "\xff\xfe"}]}', id="bad-utf8"
        ),
        pytest.param(
            b'{"model": "m1", "messages": [{"role": "user", "content": "\\ud800"}]}',
            id="lone-surrogate",
        ),
        pytest.param(b'{"model": "m1", "messages": [', id="truncated"),
        pytest.param(b"\xef\xbb\xbf" + chat_bytes("hi"), id="utf8-bom"),
        pytest.param(b"[1, 2, 3]", id="not-an-object"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"model": "m1", "messages": "hello"}', id="messages-not-a-list"),
        pytest.param(b'{"model": ["m1"], "messages": []}', id="model-not-a-string"),
    ],
)
def test_malformed_bodies_get_400_in_the_openai_format(strict, sealed, suite_keys, body):
    r = send(strict, suite_keys.client, body)
    assert r.status_code in {400, 404}, r.text
    assert error_of(r)["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("number", "status"),
    [
        pytest.param("1" * 5_000, 400, id="5000-digit-integer"),
        pytest.param("1e999", 400, id="overflowing-float"),
        pytest.param("-0.0000000000000000000000000000001e-400", 200, id="underflowing-float"),
        pytest.param("18446744073709551616", 200, id="past-uint64"),
    ],
)
def test_huge_numbers_are_refused_or_sent_as_guard_read_them(
    strict, sealed, suite_keys, number, status
):
    messages = '[{"role": "user", "content": "hi"}]'
    body = f'{{"model": "m1", "max_tokens": {number}, "messages": {messages}}}'
    r = send(strict, suite_keys.client, body.encode())
    assert r.status_code == status, r.text
    if status == 200:
        sealed.allow(1)
        forwarded = json.loads(sealed.server.requests[-1].body)
        assert forwarded["max_tokens"] == json.loads(number)
    else:
        assert "out of range" in error_of(r)["message"]


@pytest.mark.parametrize("card_first", [True, False], ids=["card-first", "card-last"])
def test_a_duplicated_key_cannot_smuggle_a_message_past_the_scan(
    strict, sealed, suite_keys, card_first
):
    clean = '[{"role": "user", "content": "hello"}]'
    card = f'[{{"role": "user", "content": "my card is {CARD}"}}]'
    first, second = (card, clean) if card_first else (clean, card)
    body = f'{{"model": "m1", "messages": {first}, "messages": {second}}}'.encode()
    r = send(strict, suite_keys.client, body)
    if r.status_code == 200:
        # guard read the last "messages" (clean) and forwarded exactly what it read:
        # one messages key, no card, whatever parser the model server uses.
        sealed.allow(1)
        forwarded = sealed.server.requests[-1].body
        assert forwarded.count(b'"messages"') == 1
        assert CARD.encode() not in forwarded
    else:
        assert r.status_code == 400  # the card was read, and blocked


@pytest.mark.parametrize(
    "model",
    [
        "m1\r\nX-Injected: yes",
        "m1\nX-Injected: yes",
        "m1\r\n\r\nHTTP/1.1 200 OK",
        "m1\x00",
        "../../admin",
        "m1" + "\u2028" + "x",
    ],
)
def test_line_breaks_in_model_names_never_become_headers(strict, sealed, suite_keys, model):
    r = send(strict, suite_keys.client, chat_bytes("hello", model=model))
    assert r.status_code == 404
    assert error_of(r)["code"] == "model_not_found"
    assert "x-injected" not in {k.lower() for k in r.headers}


def test_a_conversation_header_with_a_line_break_or_junk_is_refused(strict, sealed, suite_keys):
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: guard\r\n"
        f"Authorization: Bearer {suite_keys.client}\r\n"
        "X-Guard-Conversation: abc\x0bdef-0123456789\r\n"
    )
    body = chat_bytes("hello")
    response = raw_request(
        strict.port, f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    assert status_of(response) == 400


def test_a_client_sending_its_body_slowly_gets_408_and_others_are_served(
    guard_at, upstream, suite_keys, sealed
):
    guard = guard_at(
        make_settings(upstream.base_url, auth={"required": True}, server={"body_timeout": 0.5})
    )
    body = chat_bytes("hello")
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: guard\r\n"
        f"Authorization: Bearer {suite_keys.client}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    slow = socket.create_connection(("127.0.0.1", guard.port), timeout=5)
    slow.sendall(head + body[:10])  # and then nothing
    served: list[float] = []

    def others() -> None:
        for _ in range(3):
            started = time.monotonic()
            assert send(guard, suite_keys.client, body).status_code == 200
            served.append(time.monotonic() - started)

    sealed.allow(3)
    worker = threading.Thread(target=others)
    worker.start()
    response = read_response(slow)
    slow.close()
    worker.join(10)
    assert status_of(response) == 408
    assert b"request_timeout" in response
    assert len(served) == 3 and max(served) < 0.5  # the stalled client held nobody up


def test_a_client_trickling_its_headers_does_not_hold_up_others(strict, sealed, suite_keys):
    slow = socket.create_connection(("127.0.0.1", strict.port), timeout=5)
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gua")
    sealed.allow(1)
    started = time.monotonic()
    assert send(strict, suite_keys.client, chat_bytes("hello")).status_code == 200
    assert time.monotonic() - started < 0.5
    slow.close()

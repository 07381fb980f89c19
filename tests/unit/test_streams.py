"""Event splitting and windowed output guarding on streams."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard.pipeline.streams import StreamGuard
from guard.policy import Action, Decision, Redaction
from guard.protocols import ADAPTERS
from guard.upstream.sse import EventSplitter, sse_data


@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12), crlf=st.booleans())
def test_splitter_finds_the_same_events_wherever_chunks_are_cut(cuts, crlf):
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    events = [b'data: {"n": %d}' % i + sep for i in range(6)] + [b": comment" + sep]
    stream = b"".join(events)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    splitter = EventSplitter("sse")
    found = [event for chunk in chunks for event in splitter.feed(chunk)]
    assert found == events
    assert splitter.flush() == b""


def test_ndjson_splitter_keeps_the_unterminated_tail():
    splitter = EventSplitter("ndjson")
    assert splitter.feed(b'{"a":1}\n{"b"') == [b'{"a":1}\n']
    assert splitter.feed(b':2}\n{"c":3}') == [b'{"b":2}\n']
    assert splitter.flush() == b'{"c":3}'


def test_sse_data_joins_multiline_data():
    assert sse_data(b"event: x\ndata: a\ndata:b\n\n") == b"a\nb"
    assert sse_data(b": keepalive\n\n") is None


def _chunk(text, index=0):
    return (
        "data: "
        + json.dumps(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "extra": 1,
                "choices": [{"index": index, "delta": {"content": text}}],
            }
        )
        + "\n\n"
    ).encode()


class Recorder:
    def __init__(self, decide=None):
        self.windows = []
        self.decide = decide or (lambda texts: Decision())

    async def __call__(self, texts):
        self.windows.append(list(texts))
        return self.decide(texts)


async def test_events_are_held_until_their_window_is_scanned_then_released_unchanged():
    scan = Recorder()
    guard = StreamGuard(ADAPTERS["/v1/chat/completions"], scan, window_chars=1000)
    first, second = _chunk("Hello "), _chunk("world.")
    assert await guard.feed(first) == []
    assert await guard.feed(second) == [first, second]  # sentence end closes the window
    assert scan.windows == [["Hello world."]]
    assert await guard.feed(b"data: [DONE]\n\n") == [b"data: [DONE]\n\n"]


async def test_window_size_forces_a_scan_without_sentence_end():
    scan = Recorder()
    guard = StreamGuard(ADAPTERS["/v1/chat/completions"], scan, window_chars=10)
    assert await guard.feed(_chunk("abcdef")) == []
    assert len(await guard.feed(_chunk("ghijkl"))) == 2
    assert scan.windows == [["abcdefghijkl"]]


async def test_redaction_across_chunk_boundaries_rewrites_only_the_texts():
    def decide(texts):
        start = texts[0].index("secret")
        return Decision(
            Action.REDACT,
            ("r",),
            redactions=(Redaction(0, start, start + len("secret-1234"), "<SECRET>"),),
        )

    guard = StreamGuard(ADAPTERS["/v1/chat/completions"], Recorder(decide), window_chars=1000)
    out = []
    for piece in ["my sec", "ret-12", "34 is it."]:
        out += await guard.feed(_chunk(piece))
    chunks = [json.loads(sse_data(event)) for event in out]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "my <SECRET> is it."
    assert all(c["extra"] == 1 and c["id"] == "c" for c in chunks)


async def test_block_drops_held_text_and_ends_with_content_filter_and_done():
    def decide(texts):
        return Decision(Action.BLOCK, ("b",), "no") if "bad" in texts[0] else Decision()

    guard = StreamGuard(ADAPTERS["/v1/chat/completions"], Recorder(decide), window_chars=1000)
    released = await guard.feed(_chunk("Fine. "))
    assert len(released) == 1
    out = await guard.feed(_chunk("Now bad."))
    assert guard.stopped
    final = json.loads(sse_data(out[0]))
    assert final["choices"] == [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]
    assert out[1] == b"data: [DONE]\n\n"
    assert b"bad" not in b"".join(out)


async def test_end_of_stream_scans_the_rest_without_inventing_done():
    scan = Recorder()
    guard = StreamGuard(ADAPTERS["/v1/chat/completions"], scan, window_chars=1000)
    assert await guard.feed(_chunk("no sentence end")) == []
    out = await guard.finish()
    assert out == [_chunk("no sentence end")]
    assert scan.windows == [["no sentence end"]]


async def test_ndjson_stream_guard_for_ollama():
    guard = StreamGuard(ADAPTERS["/api/chat"], Recorder(), window_chars=1000)
    line = b'{"model":"m","message":{"role":"assistant","content":"Hi."},"done":false}\n'
    done = b'{"model":"m","message":{"role":"assistant","content":""},"done":true}\n'
    assert await guard.feed(line) == [line]
    assert await guard.feed(done) == [done]


@pytest.mark.parametrize("choice", [0, 3])
async def test_choices_are_named_in_the_final_chunk(choice):
    guard = StreamGuard(
        ADAPTERS["/v1/chat/completions"], Recorder(lambda t: Decision(Action.BLOCK)), window_chars=1
    )
    out = await guard.feed(_chunk("x", index=choice))
    assert json.loads(sse_data(out[0]))["choices"][0]["index"] == choice


async def test_without_hold_text_flows_on_and_windows_are_still_scanned():
    scan = Recorder(lambda texts: Decision(Action.FLAG, ("flag.it",)))
    guard = StreamGuard(ADAPTERS["/v1/chat/completions"], scan, 1000, hold=False)
    first, second = _chunk("Hello, the"), _chunk(" key is here. And")
    assert await guard.feed(first) == [first]  # no sentence end yet, released at once
    assert scan.windows == []
    assert await guard.feed(second) == [second]
    assert scan.windows == [["Hello, the key is here. And"]]
    third = _chunk(" more")
    assert await guard.feed(third) == [third]
    assert await guard.finish() == []  # everything was sent; the tail is still scanned
    assert scan.windows == [["Hello, the key is here. And"], [" more"]]


async def test_without_hold_a_block_still_ends_the_stream():
    scan = Recorder(lambda texts: Decision(Action.BLOCK, ("b",)))
    guard = StreamGuard(ADAPTERS["/v1/chat/completions"], scan, 1000, hold=False)
    assert await guard.feed(_chunk("Some text")) == [_chunk("Some text")]
    out = await guard.feed(_chunk(" then more."))
    assert guard.stopped
    assert b"content_filter" in out[0] and out[-1] == b"data: [DONE]\n\n"

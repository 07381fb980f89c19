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

    async def __call__(self, texts, select=None):
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


# Incremental release with the real pii detector: only the tail that may still
# become a value is held.

PII_POLICY = """
    name: pii-out
    detectors:
      pii:
        entities: {EMAIL_ADDRESS: 0.5, CREDIT_CARD: 0.5}
    rules:
      - id: out.redact
        when: {pii.any: [EMAIL_ADDRESS, CREDIT_CARD]}
        action: redact
        redact: {EMAIL_ADDRESS: replace, CREDIT_CARD: mask}
"""


class BundleScan:
    def __init__(self, bundle, ctx):
        self.bundle, self.ctx, self.findings = bundle, ctx, []

    async def __call__(self, texts, select=None):
        scan, decision = await self.bundle.check(texts, self.ctx, select)
        self.findings.extend(scan.findings)
        return decision


@pytest.fixture
def pii_stream(tmp_path):
    from guard.detectors.base import Direction
    from guard.pipeline.streams import StreamGuard
    from guard.policy.pseudonyms import Pseudonyms
    from tests.fakes.policies import context, load_bundle, write_bundle

    bundle = load_bundle(write_bundle(tmp_path / "b", {"pii.yaml": PII_POLICY})).bundle
    ctx = context(Direction.OUTPUT)

    def make(pseudonyms=None):
        scan = BundleScan(bundle, ctx)
        guard = StreamGuard(
            ADAPTERS["/v1/chat/completions"],
            scan,
            200,
            True,
            holdback=lambda text: bundle.holdback(text, ctx),
            pseudonyms=pseudonyms or Pseudonyms(),
        )
        return guard, scan

    return make


def contents(events):
    out = []
    for event in events:
        data = sse_data(event)
        if data and data != b"[DONE]":
            out.append(json.loads(data)["choices"][0]["delta"].get("content", ""))
    return out


async def run_pieces(guard, pieces):
    released = [contents(await guard.feed(_chunk(piece))) for piece in pieces]
    return [*released, contents(await guard.finish())]


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param(["Write to maria.gon", "zalez@example.com today."], id="email-in-2"),
        pytest.param(["Write to maria", ".gonzalez@exam", "ple.com today."], id="email-in-3"),
        pytest.param(
            ["Write to ", "m", "aria.gonzalez@example.co", "m", " today."], id="email-tld-split"
        ),
    ],
)
async def test_an_email_split_over_chunks_never_reaches_the_client(pii_stream, pieces):
    guard, scan = pii_stream()
    released = await run_pieces(guard, pieces)
    sent = [text for batch in released for text in batch]
    assert "".join(sent) == "Write to <EMAIL_ADDRESS> today."
    for fragment in ("maria", "gonzalez", "example", "@"):
        assert not any(fragment in text for text in sent)
    assert [f.label for f in scan.findings] == ["EMAIL_ADDRESS"]  # found once


async def test_a_card_number_sent_digit_by_digit_is_masked(pii_stream):
    guard, scan = pii_stream()
    card = "4012 8888 8888 1881"
    released = await run_pieces(guard, ["Your card ", *card, " is on file."])
    sent = [text for batch in released for text in batch]
    assert "".join(sent) == "Your card " + "*" * 15 + "1881 is on file."
    # No digit went out before the whole number was known, and then only masked.
    assert [text for text in sent if any(c.isdigit() for c in text)] == ["*" * 15 + "1881"]
    assert [f.label for f in scan.findings] == ["CREDIT_CARD"]


async def test_text_before_a_possible_value_is_released_at_once(pii_stream):
    guard, _ = pii_stream()
    first = contents(await guard.feed(_chunk("Hello there. Write to jo")))
    assert first == ["Hello there. Write to "]  # the event is cut; "jo" may start an email
    second = contents(await guard.feed(_chunk("hn soon. ")))
    assert second == ["jo", "hn soon. "]  # the rest of the cut event, then the next
    assert contents(await guard.finish()) == []


async def test_placeholders_are_restored_even_when_split(pii_stream):
    from guard.policy.pseudonyms import Pseudonyms

    pseudonyms = Pseudonyms()
    pseudonyms.token("PERSON", "Maria Gonzalez")
    guard, _ = pii_stream(pseudonyms)
    released = await run_pieces(guard, ["Dear <PER", "SON_1", ">, thanks. <PERSON_2> too."])
    sent = [text for batch in released for text in batch]
    assert "".join(sent) == "Dear Maria Gonzalez, thanks. <PERSON_2> too."
    assert not any("<PER" in text and ">" not in text for text in sent)


async def test_a_chunk_that_finishes_its_choice_is_never_cut(pii_stream):
    guard, _ = pii_stream()
    final = (
        "data: "
        + json.dumps(
            {
                "id": "c",
                "choices": [{"index": 0, "delta": {"content": "mail jo"}, "finish_reason": "stop"}],
            }
        )
        + "\n\n"
    ).encode()
    assert await guard.feed(final) == []  # "jo" may grow: held whole
    assert await guard.finish() == [final]

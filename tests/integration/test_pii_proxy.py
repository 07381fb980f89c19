"""Personal data through the real proxy, with the bundled pii policy: what the model
server receives, what the client gets back (buffered and streamed), conversations,
concurrency, and what the audit trail keeps.

Names need an NER model; here a spaCy pipeline with a rule-based `ner` component,
built on disk and loaded by path like any model."""

import asyncio
import json
import uuid

import httpx
import pytest
import spacy
from faker import Faker

from tests.conftest import make_settings
from tests.integration.test_audit_events import recorded

HEADER = "x-guard-conversation-id"
NAMES = [
    f"{first} {last}"
    for first, last in zip(
        ["Maria", "John", "Aiko", "Lars", "Fatima"],
        ["Gonzalez", "Smith", "Tanaka", "Berg", "Haddad"],
        strict=True,
    )
]


def _unique_names(n):
    fake = Faker("en_US")
    fake.seed_instance(11)
    names: list[str] = []
    while len(names) < n:
        name = f"{fake.first_name()} {fake.last_name()}"
        if name not in names and name not in NAMES:
            names.append(name)
    return names


CROWD = _unique_names(100)


@pytest.fixture(scope="module")
def ner_model(tmp_path_factory):
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", name="ner")
    ruler.add_patterns([{"label": "PERSON", "pattern": name} for name in NAMES + CROWD])
    path = tmp_path_factory.mktemp("ner") / "names"
    nlp.to_disk(path)
    return str(path)


@pytest.fixture
def pii_guard(guard_at, upstream, ner_model):
    settings = make_settings(
        upstream.base_url,
        detectors={"pii": {"ner": {"engine": "spacy", "model": ner_model}}},
    )
    return guard_at(settings)


def chat(url, content, stream=False, headers=None, model="m1"):
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": content}], "stream": stream},
        headers=headers,
        timeout=30,
    )


def streamed_text(response):
    blocks = [b for b in response.text.split("\n\n") if b.startswith("data: {")]
    return [
        choice.get("delta", {}).get("content") or ""
        for block in blocks
        for choice in json.loads(block[6:])["choices"]
    ]


def sent_upstream(upstream):
    return [r.json()["messages"][-1]["content"] for r in upstream.requests]


def test_names_are_pseudonymized_for_the_model_and_restored_for_the_client(pii_guard, upstream):
    r = chat(pii_guard.url, "Write to Maria Gonzalez (maria@example.com) and John Smith.")
    assert r.status_code == 200, r.text
    assert sent_upstream(upstream) == ["Write to <PERSON_1> (<EMAIL_ADDRESS>) and <PERSON_2>."]
    answer = r.json()["choices"][0]["message"]["content"]
    assert answer == "echo: Write to Maria Gonzalez (<EMAIL_ADDRESS>) and John Smith."


def test_a_streamed_answer_restores_placeholders_split_across_chunks(pii_guard, upstream):
    upstream.behaviour.reply_pieces = ["Dear <PER", "SON_1>, about <PERSON_", "2>: ok", "."]
    r = chat(pii_guard.url, "Answer Maria Gonzalez about John Smith", stream=True)
    assert r.status_code == 200
    pieces = streamed_text(r)
    assert "".join(pieces) == "Dear Maria Gonzalez, about John Smith: ok."
    assert not any("<" in piece for piece in pieces)
    assert r.text.rstrip().endswith("data: [DONE]")


def test_pii_in_a_streamed_answer_is_replaced_and_never_sent_in_parts(pii_guard, upstream):
    upstream.behaviour.reply_pieces = [
        "Reach her at ma",
        "ria@exam",
        "ple.com or 4012 8888 ",
        "8888 1881.",
    ]
    r = chat(pii_guard.url, "Where can I reach support?", stream=True)
    pieces = streamed_text(r)
    assert "".join(pieces) == "Reach her at <EMAIL_ADDRESS> or ***************1881."
    for fragment in ("ma", "ria", "exam", "4012", "8888"):
        assert not any(fragment in p.replace("<EMAIL_ADDRESS>", "") for p in pieces)


def test_a_card_in_a_prompt_is_blocked_before_the_model(pii_guard, upstream):
    r = chat(pii_guard.url, "Charge 4111 1111 1111 1111 for Maria Gonzalez")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "content_policy_violation"
    assert upstream.requests == []


def test_a_conversation_keeps_its_pseudonyms_from_turn_to_turn(pii_guard, upstream):
    one, two = {HEADER: f"conv-{uuid.uuid4()}"}, {HEADER: f"conv-{uuid.uuid4()}"}
    chat(pii_guard.url, "Maria Gonzalez met John Smith.", headers=one)
    chat(pii_guard.url, "What did John Smith say to Aiko Tanaka?", headers=one)
    chat(pii_guard.url, "What did John Smith say?", headers=two)
    chat(pii_guard.url, "What did John Smith say?")  # no conversation: a fresh map
    assert sent_upstream(upstream) == [
        "<PERSON_1> met <PERSON_2>.",
        "What did <PERSON_2> say to <PERSON_3>?",
        "What did <PERSON_1> say?",
        "What did <PERSON_1> say?",
    ]
    upstream.behaviour.reply_text = "<PERSON_1> told <PERSON_3> about <PERSON_2>."
    r = chat(pii_guard.url, "Remind me.", headers=one)
    assert r.json()["choices"][0]["message"]["content"] == (
        "Maria Gonzalez told Aiko Tanaka about John Smith."
    )
    r = chat(pii_guard.url, "Remind me.", headers=two)  # only its own names
    assert (
        r.json()["choices"][0]["message"]["content"]
        == "John Smith told <PERSON_3> about <PERSON_2>."
    )


@pytest.mark.parametrize("bad", ["short", "has space in it", "x" * 129, "semi;colon-123"])
def test_a_malformed_conversation_id_is_a_400(pii_guard, upstream, bad):
    r = chat(pii_guard.url, "hello", headers={HEADER: bad})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert HEADER in r.json()["error"]["message"]
    assert upstream.requests == []


async def test_a_hundred_parallel_exchanges_never_mix_their_personal_data(pii_guard, upstream):
    emails = [f"user{i}.{uuid.uuid4().hex[:6]}@example.com" for i in range(len(CROWD))]

    async def one(client, i):
        prompt = f"Send the report to {CROWD[i]} at {emails[i]}."
        r = await client.post(
            f"{pii_guard.url}/v1/chat/completions",
            json={"model": "m1", "messages": [{"role": "user", "content": prompt}]},
        )
        return r.json()["choices"][0]["message"]["content"]

    async with httpx.AsyncClient(timeout=60) as client:
        answers = await asyncio.gather(*(one(client, i) for i in range(len(CROWD))))
    for i, answer in enumerate(answers):
        assert answer == f"echo: Send the report to {CROWD[i]} at <EMAIL_ADDRESS>."
        others = [name for j, name in enumerate(CROWD) if j != i]
        assert not any(name in answer for name in others)
    received = sent_upstream(upstream)
    assert len(received) == len(CROWD)
    assert all(text == "Send the report to <PERSON_1> at <EMAIL_ADDRESS>." for text in received)
    body = b"".join(r.body for r in upstream.requests)
    assert not any(name.encode() in body for name in CROWD)
    assert not any(email.encode() in body for email in emails)


def test_the_audit_event_never_holds_a_raw_value(pii_guard, upstream):
    upstream.behaviour.reply_pieces = ["Yes, <PERSON_1> wrote ", "from 203.0.113.9."]
    chat(pii_guard.url, "Did Maria Gonzalez write from maria@example.com?")
    chat(pii_guard.url, "Did Maria Gonzalez write from maria@example.com?", stream=True)
    events = recorded(pii_guard, 2)
    assert len(events) == 2
    for event in events:
        stored = json.dumps([event.request_texts, event.response_texts])
        for raw in ("Maria", "Gonzalez", "maria@example.com", "203.0.113.9"):
            assert raw not in stored
        assert "<PERSON_1>" in stored
        assert {(f.direction, f.label) for f in event.findings} >= {
            ("input", "PERSON"),
            ("input", "EMAIL_ADDRESS"),
            ("output", "IP_ADDRESS"),
        }


def test_readyz_says_what_the_pii_detector_can_and_cannot_find(pii_guard, guard_at, upstream):
    details = httpx.get(f"{pii_guard.url}/readyz").json()["detector_details"]["pii"]
    assert details["ner"].startswith("spacy:")
    assert "PERSON" in details["entities"] and details["cannot_detect"] == []
    plain = guard_at(make_settings(upstream.base_url))
    details = httpx.get(f"{plain.url}/readyz").json()["detector_details"]["pii"]
    assert details["ner"] is None and details["cannot_detect"] == ["PERSON"]


def test_ollama_streams_restore_placeholders_and_redact_too(pii_guard, upstream):
    upstream.behaviour.reply_pieces = ["Hi <PERS", "ON_1>, mail ", "x@exam", "ple.org."]
    r = httpx.post(
        f"{pii_guard.url}/api/chat",
        json={"model": "olm", "messages": [{"role": "user", "content": "I am Maria Gonzalez"}]},
        timeout=30,
    )
    assert r.status_code == 200
    lines = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    pieces = [line["message"]["content"] for line in lines if "message" in line]
    assert "".join(pieces) == "Hi Maria Gonzalez, mail <EMAIL_ADDRESS>."
    assert not any("<PERS" in p or "exam" in p for p in pieces)
    assert lines[-1]["done"] is True
    assert sent_upstream(upstream) == ["I am <PERSON_1>"]

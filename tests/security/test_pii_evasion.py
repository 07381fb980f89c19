"""Disguised and split personal data through the real proxy, with the bundled pii
policy (no NER model): card numbers in full-width digits, with invisible
characters, or split between two messages are refused before the model; disguised
and split email addresses are replaced whole."""

import json

import httpx
import pytest

from guard.policy.actions import mask

CYR_A, GREEK_OMICRON = "\u0430", "\u03bf"


def full_width(text):
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def post(url, contents, stream=False):
    messages = [{"role": "user", "content": content} for content in contents]
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "m1", "messages": messages, "stream": stream},
        timeout=30,
    )


def sent_upstream(upstream):
    return [[m["content"] for m in r.json()["messages"]] for r in upstream.requests]


@pytest.mark.parametrize(
    "contents",
    [
        pytest.param(
            [f"Charge {full_width('4111 1111 1111 1111')} for the order"], id="full-width-card"
        ),
        pytest.param(["Charge 4111\u200b1111\u200b1111\u200b1111 now"], id="zero-width-card"),
        pytest.param(
            ["My card number is 4111 1111", " 1111 1111, charge it"], id="card-split-by-group"
        ),
        pytest.param(["My card number is 4111 11", "11 1111 1111, thanks"], id="card-split-mid"),
        pytest.param(
            [f"My card is {full_width('4111 1111')}", f"\u200b{full_width(' 1111 1111')}"],
            id="full-width-card-split",
        ),
        pytest.param(["SSN \u0665\u0663\u0666-22-1234 on file"], id="ssn-arabic-indic-digits"),
    ],
)
def test_a_disguised_or_split_card_is_refused_before_the_model(guard, upstream, contents):
    r = post(guard.url, contents)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "content_policy_violation"
    assert upstream.requests == []


def test_a_disguised_email_is_replaced_whole(guard, upstream):
    r = post(guard.url, [f"Write to ma\u200bria@ex{CYR_A}mple.c{GREEK_OMICRON}m today."])
    assert r.status_code == 200, r.text
    assert sent_upstream(upstream) == [["Write to <EMAIL_ADDRESS> today."]]


def test_an_email_split_between_messages_is_replaced_in_both(guard, upstream):
    r = post(guard.url, ["Write to maria.gonzalez@", "example.com about the invoice."])
    assert r.status_code == 200, r.text
    assert sent_upstream(upstream) == [
        ["Write to <EMAIL_ADDRESS>", "<EMAIL_ADDRESS> about the invoice."]
    ]


def test_look_alikes_that_are_not_pii_pass_unchanged(guard, upstream):
    contents = [f"Upgrade to {full_width('3.12.0')} on {full_width('2024-03-05')}.", "Спасибо."]
    r = post(guard.url, contents)
    assert r.status_code == 200, r.text
    assert sent_upstream(upstream) == [contents]


def test_a_streamed_card_with_invisible_characters_is_masked_and_never_sent_in_parts(
    guard, upstream
):
    card = "4111\u200b1111 1111 1111"
    upstream.behaviour.reply_pieces = ["Your card is 4111\u200b", "1111 1111 ", "1111 on file."]
    r = post(guard.url, ["Which card is on file?"], stream=True)
    assert r.status_code == 200
    blocks = [b for b in r.text.split("\n\n") if b.startswith("data: {")]
    pieces = [
        choice.get("delta", {}).get("content") or ""
        for block in blocks
        for choice in json.loads(block[6:])["choices"]
    ]
    assert "".join(pieces) == f"Your card is {mask(card)} on file."
    assert not any("4111" in piece for piece in pieces)


def tool_call(call_id, arguments):
    function = {"name": "charge", "arguments": arguments}
    return {"id": call_id, "type": "function", "function": function}


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param(
            [
                {"role": "user", "content": "Charge my card."},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        tool_call("c1", '{"card": "4111 1111'),
                        tool_call("c2", ' 1111 1111"}'),
                    ],
                },
            ],
            id="split-between-tool-call-arguments",
        ),
        pytest.param(
            [
                {"role": "user", "content": "My card starts 4111 1111"},
                {
                    "role": "assistant",
                    "content": None,
                    # arguments are any string: the second half, as it is
                    "tool_calls": [tool_call("c1", " 1111 1111")],
                },
            ],
            id="split-between-a-message-and-tool-call-arguments",
        ),
        pytest.param(
            [
                {"role": "user", "content": "Charge the card in the tool result."},
                {"role": "tool", "tool_call_id": "c1", "content": f"card={full_width('4111')} "},
                {"role": "tool", "tool_call_id": "c2", "content": "1111 1111 1111"},
            ],
            id="split-between-tool-results",
        ),
    ],
)
def test_a_card_split_into_tool_calls_is_refused_before_the_model(guard, upstream, messages):
    r = httpx.post(
        f"{guard.url}/v1/chat/completions",
        json={"model": "m1", "messages": messages},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "content_policy_violation"
    assert upstream.requests == []

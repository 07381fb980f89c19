"""Pseudonym maps, redaction methods that use them, and the per-tenant hash."""

import pytest

from guard.detectors.base import Finding
from guard.policy.actions import Redactor, apply_redactions
from guard.policy.decision import Redaction
from guard.policy.pseudonyms import Pseudonyms


def test_equal_values_get_equal_placeholders_numbered_per_type():
    p = Pseudonyms()
    assert p.token("PERSON", "Maria") == "<PERSON_1>"
    assert p.token("PERSON", "John") == "<PERSON_2>"
    assert p.token("EMAIL_ADDRESS", "m@x.org") == "<EMAIL_ADDRESS_1>"
    assert p.token("PERSON", "Maria") == "<PERSON_1>"
    assert len(p) == 3 and p.changed


def test_only_this_maps_placeholders_are_restored():
    p = Pseudonyms()
    p.token("PERSON", "Maria")
    text = "Dear <PERSON_1>, <PERSON_2> and <PERSON_1> (<person_1>)."
    reds = p.restorations([text])
    assert apply_redactions([text], reds) == ["Dear Maria, <PERSON_2> and Maria (<person_1>)."]
    assert Pseudonyms().restorations([text]) == []


@pytest.mark.parametrize(
    ("text", "held"),
    [
        pytest.param("Hello <", 1, id="an-opening"),
        pytest.param("Hello <PER", 4, id="a-label-prefix"),
        pytest.param("Hello <PERSON_1", 9, id="no-closing-yet"),
        pytest.param("Hello <PERSON_1>", 0, id="whole"),
        pytest.param("a < b", 0, id="not-a-placeholder"),
        pytest.param("x <person", 0, id="lower-case-is-not-ours"),
    ],
)
def test_a_stream_holds_only_a_tail_that_may_become_a_placeholder(text, held):
    p = Pseudonyms()
    p.token("PERSON", "Maria")
    assert p.holdback(text) == held


def test_an_empty_map_holds_nothing():
    assert Pseudonyms().holdback("Hello <PER") == 0


def test_maps_round_trip_and_keep_numbering():
    p = Pseudonyms()
    p.token("PERSON", "Maria")
    p.token("PERSON", "João")
    back = Pseudonyms.loads(p.dumps())
    assert back.token("PERSON", "João") == "<PERSON_2>"
    assert back.token("PERSON", "Ana") == "<PERSON_3>"
    assert not Pseudonyms.loads(p.dumps()).changed


@pytest.mark.parametrize(
    "data",
    [b'[["PERSON_1", "x"]]', b'[["<PERSON_1>", 3]]', b"not json"],
)
def test_a_damaged_map_is_refused(data):
    with pytest.raises(ValueError, match=r"pseudonym map|Expecting value"):
        Pseudonyms.loads(data)


def test_pseudonymize_is_resolved_by_the_exchanges_map_in_order_of_appearance():
    texts = ["Ana met Maria", "then Maria met Ana"]
    findings = [
        Finding("pii", "PERSON", 0.9, 0, (0, 3)),
        Finding("pii", "PERSON", 0.9, 0, (8, 13)),
        Finding("pii", "PERSON", 0.9, 1, (5, 10)),
        Finding("pii", "PERSON", 0.9, 1, (15, 18)),
    ]
    reds = Redactor(b"k").redactions(findings, texts, [{"PERSON": "pseudonymize"}])
    p = Pseudonyms()
    assert apply_redactions(texts, reds, p) == [
        "<PERSON_1> met <PERSON_2>",
        "then <PERSON_2> met <PERSON_1>",
    ]
    assert apply_redactions(texts, reds) == ["<PERSON> met <PERSON>", "then <PERSON> met <PERSON>"]


def test_hash_tokens_are_equal_within_a_tenant_and_differ_across():
    redactor = Redactor(b"key")
    a1 = redactor.replace("hash", "EMAIL_ADDRESS", "m@x.org", "acme")
    a2 = redactor.replace("hash", "EMAIL_ADDRESS", "m@x.org", "acme")
    b = redactor.replace("hash", "EMAIL_ADDRESS", "m@x.org", "globex")
    other = redactor.replace("hash", "EMAIL_ADDRESS", "n@x.org", "acme")
    assert a1 == a2 != b
    assert a1 != other
    assert a1.startswith("<EMAIL_ADDRESS:") and "m@x.org" not in a1
    assert Redactor(b"other").replace("hash", "EMAIL_ADDRESS", "m@x.org", "acme") != a1


def test_mask_keeps_the_last_four_of_long_values():
    redactor = Redactor(b"k")
    assert redactor.replace("mask", "CREDIT_CARD", "4111111111111111") == "*" * 12 + "1111"
    assert redactor.replace("mask", "X", "1234") == "****"


def test_overlapping_redactions_merge():
    out = apply_redactions(["abcdefgh"], [Redaction(0, 1, 5, "X"), Redaction(0, 3, 7, "Y")])
    assert out == ["aXh"]

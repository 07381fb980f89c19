"""The pii detector: Presidio's recognizers run by guard, policy recognizers as data,
thresholds, allow lists, and the stream tail it holds back."""

import os
import subprocess
import sys

import pytest

from guard.detectors.pii.config import PiiConfig
from guard.detectors.pii.runners import Hit
from guard.detectors.registry import DetectorRegistry
from guard.errors import ConfigError

CONTACT = {
    "EMAIL_ADDRESS": 0.5,
    "PHONE_NUMBER": 0.5,
    "IP_ADDRESS": 0.5,
    "IBAN_CODE": 0.5,
    "CREDIT_CARD": 0.5,
    "US_SSN": 0.5,
    "CRYPTO": 0.5,
    "URL": 0.5,
}


def build(*configs, options=None):
    validated = [PiiConfig.model_validate(c) for c in configs]
    return DetectorRegistry.builtin().build("pii", options or {}, validated)


@pytest.fixture(scope="module")
def contact():
    return build({"entities": CONTACT})


def found(detector, text):
    return [(r.entity_type, text[r.start : r.end]) for r in detector.analyze(text)]


@pytest.mark.parametrize(
    ("text", "label", "value"),
    [
        pytest.param(
            "mail maria.gonzalez@example.com now",
            "EMAIL_ADDRESS",
            "maria.gonzalez@example.com",
            id="email",
        ),
        pytest.param(
            "ring +1 (415) 555-2671 today", "PHONE_NUMBER", "+1 (415) 555-2671", id="phone-us-plus"
        ),
        pytest.param(
            "office: 020 7946 0958.", "PHONE_NUMBER", "020 7946 0958", id="phone-gb-national"
        ),
        pytest.param("Berlin desk +49 30 901820", "PHONE_NUMBER", "+49 30 901820", id="phone-de"),
        pytest.param(
            "my mobile 4155552672 works", "PHONE_NUMBER", "4155552672", id="bare-phone-with-word"
        ),
        pytest.param(
            "card 4111 1111 1111 1111 declined",
            "CREDIT_CARD",
            "4111 1111 1111 1111",
            id="card-spaced",
        ),
        pytest.param(
            "card 5500000000000004.", "CREDIT_CARD", "5500000000000004", id="card-compact"
        ),
        pytest.param(
            "IBAN DE89 3704 0044 0532 0130 00 ok",
            "IBAN_CODE",
            "DE89 3704 0044 0532 0130 00",
            id="iban-groups",
        ),
        pytest.param(
            "to GB82WEST12345698765432 today",
            "IBAN_CODE",
            "GB82WEST12345698765432",
            id="iban-compact",
        ),
        pytest.param("SSN 536-22-1234 on file", "US_SSN", "536-22-1234", id="ssn"),
        pytest.param("from 203.0.113.42 at night", "IP_ADDRESS", "203.0.113.42", id="ipv4"),
        pytest.param(
            "host 2001:db8::8a2e:370:7334 is up", "IP_ADDRESS", "2001:db8::8a2e:370:7334", id="ipv6"
        ),
        pytest.param(
            "send to 1BoatSLRHtKNngkdXEeobR76b53LETtpyT now",
            "CRYPTO",
            "1BoatSLRHtKNngkdXEeobR76b53LETtpyT",
            id="bitcoin",
        ),
    ],
)
def test_pattern_entities_are_found_with_their_spans(contact, text, label, value):
    assert (label, value) in found(contact, text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Upgrade from 2.14.1 to 3.0.0-rc2 on 2024-03-05.", id="versions-and-date"),
        pytest.param("Order 4829173650 shipped; ticket #58213.", id="order-number"),
        pytest.param("The build 20240305.1 ran at 14:30 on 05/03/2024.", id="build-and-date"),
        pytest.param("Card 4111 1111 1111 1112 fails the checksum.", id="card-bad-luhn"),
        pytest.param(
            "IBAN DE89 3704 0044 0532 0130 01 has a bad check digit.", id="iban-bad-check"
        ),
        pytest.param("Ref 078-05-1120 is the famous sample SSN.", id="invalid-ssn"),
    ],
)
def test_look_alikes_are_not_found(contact, text):
    assert found(contact, text) == []


def test_a_context_word_raises_the_score():
    detector = build({"entities": {"US_SSN": 0.0}})
    plain = detector.analyze("the value 536-22-1234 again")[0].score
    near = detector.analyze("my SSN is 536-22-1234")[0].score
    assert plain < near
    assert near >= plain + 0.35 - 1e-9


def test_thresholds_per_entity_and_the_lowest_of_two_policies_wins():
    strict = build({"entities": {"US_SSN": 0.8}})
    assert found(strict, "the value 536-22-1234 again") == []  # 0.5 without context
    assert found(strict, "SSN: 536-22-1234") == [("US_SSN", "536-22-1234")]
    both = build({"entities": {"US_SSN": 0.8}}, {"entities": ["US_SSN"], "min_score": 0.4})
    assert found(both, "the value 536-22-1234 again") == [("US_SSN", "536-22-1234")]


def test_policy_recognizers_regex_context_validator_and_deny_list():
    detector = build(
        {
            "recognizers": [
                {
                    "name": "EMPLOYEE_ID",
                    "regex": r"\bEMP-\d{6}\b",
                    "score": 0.3,
                    "context": ["employee", "staff"],
                },
                {"name": "ACCOUNT", "regex": r"\b\d{8}\b", "validator": "luhn", "score": 0.4},
                {"name": "PROJECT", "deny_list": ["Blue Falcon", "Nightjar"]},
            ],
            "min_score": 0.5,
        }
    )
    assert found(detector, "ticket EMP-123456 closed") == []  # 0.3, no context word
    assert found(detector, "employee EMP-123456 left") == [("EMPLOYEE_ID", "EMP-123456")]
    assert found(detector, "account 79927397 ok") == []  # 8 digits, fails Luhn
    assert found(detector, "account 49927398 ok") == []
    assert found(detector, "account 79927398 ok") == [("ACCOUNT", "79927398")]
    assert found(detector, "the Nightjar and blue falcon plans") == [
        ("PROJECT", "Nightjar"),
        ("PROJECT", "blue falcon"),
    ]


def test_allow_lists_are_never_flagged(contact):
    detector = build(
        {
            "entities": ["EMAIL_ADDRESS"],
            "allow": ["Support@Example.com"],
            "allow_patterns": [r"[a-z.]+@example\.org"],
        }
    )
    text = "write support@example.com, noreply@example.org or maria@example.net"
    assert found(detector, text) == [("EMAIL_ADDRESS", "maria@example.net")]


@pytest.mark.parametrize(
    ("configs", "message"),
    [
        pytest.param(
            [{"entities": ["NOT_A_THING"]}], "unknown entity NOT_A_THING", id="unknown-entity"
        ),
        pytest.param(
            [
                {"recognizers": [{"name": "X_ID", "regex": "X-\\d+"}]},
                {"recognizers": [{"name": "X_ID", "regex": "X\\d+"}]},
            ],
            "X_ID is defined differently",
            id="same-name-two-meanings",
        ),
    ],
)
def test_bad_bundles_fail_at_build(configs, message):
    with pytest.raises(ConfigError, match=message):
        build(*configs)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param({"recognizers": [{"name": "X"}]}, "give a regex", id="nothing-to-find"),
        pytest.param(
            {"recognizers": [{"name": "X", "regex": "("}]}, "recognizer X", id="bad-regex"
        ),
        pytest.param({"allow_patterns": ["["]}, "allow_patterns", id="bad-allow-pattern"),
        pytest.param(
            {"recognizers": [{"name": "X", "regex": "a", "validator": "crc"}]},
            "validator",
            id="unknown-validator",
        ),
    ],
)
def test_bad_policy_sections_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        PiiConfig.model_validate(config)


def test_overlapping_findings_keep_the_best():
    detector = build({"entities": {"PHONE_NUMBER": 0.1, "US_SSN": 0.1}})
    # An SSN with its word is also a valid-looking number; one finding per span.
    results = detector.analyze("SSN 536-22-1234")
    assert [(r.entity_type, r.start, r.end) for r in results] == [("US_SSN", 4, 15)]


@pytest.mark.parametrize(
    ("text", "held"),
    [
        pytest.param("Contact me at ", 0, id="nothing-pending"),
        pytest.param("Contact me at john", 4, id="maybe-an-email"),
        pytest.param("Contact me at john.doe@exa", 12, id="half-an-email"),
        pytest.param("mail john@example.com", 16, id="an-email-may-grow"),
        pytest.param("card 4111 1111 11", 12, id="half-a-card"),
        pytest.param("It is done. ", 0, id="sentence-end"),
    ],
)
def test_holdback_is_the_tail_that_may_still_become_a_value(contact, text, held):
    assert contact.holdback(text) == held


def test_without_ner_names_are_reported_as_undetectable(caplog):
    with caplog.at_level("INFO", logger="guard.detectors.pii"):
        detector = build({"entities": ["PERSON", "EMAIL_ADDRESS"]})
    assert "pii: NER model none (pattern recognizers only" in caplog.text
    assert "detects EMAIL_ADDRESS" in caplog.text
    assert "pii: cannot detect PERSON: no NER model is configured" in caplog.text
    info = detector.describe()
    assert info["ner"] is None
    assert info["cannot_detect"] == ["PERSON"]
    assert found(detector, "Maria Gonzalez wrote") == []


def test_long_texts_are_scanned_off_the_event_loop_with_the_same_findings(contact):
    text = ("Write to maria@example.com about the order. " * 200)[:8000]
    small = build({"entities": CONTACT}, options={"inline_chars": 10})
    import asyncio

    from tests.fakes.policies import context

    inline = contact.scan([text])
    threaded = asyncio.run(small.detect([text], context()))
    assert threaded == inline
    assert len(inline) == text.count("maria@example.com")


def test_findings_of_a_repeated_text_come_from_the_cache_and_match_a_fresh_scan():
    from guard.detectors.pii import detector as module

    detector = build({"entities": CONTACT})
    text = "Reply to maria@example.com about card 4111 1111 1111 1111."
    first = detector.analyze(text)
    assert len(detector._cache) == 1
    assert detector.analyze(text) == first
    assert len(detector._cache) == 1  # a hit, not a second entry
    changed = text.replace("maria", "mario")
    assert [(h.entity_type, h.start, h.end) for h in detector.analyze(changed)] == [
        (h.entity_type, h.start, h.end) for h in first
    ]
    assert len(detector._cache) == 2
    assert b"maria" not in b"".join(detector._cache)  # keyed by digest, not by the text
    long_text = "x " * module.CACHE_CHARS + text
    assert len(detector.analyze(long_text)) == 2
    assert len(detector._cache) == 2  # too long to keep


def test_the_cache_holds_nothing_the_garbage_collector_keeps_walking():
    """A full cache is thousands of entries: each must drop out of the collector's
    generations (plain tuples of strings and numbers do), or every full collection
    walks them all."""
    import gc

    detector = build({"entities": CONTACT})
    text = "Reply to maria@example.com or call 212-555-0143 about the order."
    first = detector.analyze(text)
    gc.collect()
    gc.collect()  # a tuple is untracked once its items are
    assert [gc.is_tracked(entry) for entry in detector._cache.values()] == [False]
    again = detector.analyze(text)
    assert again == first
    assert all(type(hit) is Hit for hit in again)


LOAD_IN_A_FRESH_PROCESS = """
import sys
from guard.detectors.pii.config import PiiConfig
from guard.detectors.registry import DetectorRegistry
config = PiiConfig.model_validate({"entities": {"EMAIL_ADDRESS": 0.5}})
detector = DetectorRegistry.builtin().build("pii", {}, [config])
assert detector.scan(["write to maria@example.com"])
print("transformers" in sys.modules)
from presidio_analyzer.nlp_engine import huggingface_token_pipe
print(huggingface_token_pipe.hf_pipeline is None)
import transformers  # guard's own NER and toxicity detectors import it later
print(transformers.pipeline is not None)
"""


def test_presidio_loads_without_transformers_and_leaves_it_importable():
    """Presidio imports transformers for an NLP engine guard does not use (3 s of every
    start) and picks a device for it, on a GPU host opening a CUDA context in every
    process; guard's pii detector loads it without either."""
    env = {k: v for k, v in os.environ.items() if k != "PRESIDIO_DEVICE"}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_IN_A_FRESH_PROCESS],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert result.stdout.split() == ["False", "True", "True"]

"""guard runs Presidio's pattern recognizers its own lean way (guard.detectors.pii.runners):
what it finds must be what Presidio's own ``analyze`` finds, span for span and score for
score, on realistic texts and on the cases each shortcut could get wrong."""

import functools
import random
import re
import warnings

import pytest
import regex
from faker import Faker
from faker.config import AVAILABLE_LOCALES
from hypothesis import given
from hypothesis import strategies as st
from presidio_analyzer import PatternRecognizer
from presidio_analyzer.predefined_recognizers import EmailRecognizer as PresidioEmail
from presidio_analyzer.predefined_recognizers import IbanRecognizer as PresidioIban

from guard.detectors.pii.recognizers import (
    EMAIL,
    EmailRecognizer,
    IbanRecognizer,
    PhoneRecognizer,
    catalogue,
)
from guard.detectors.pii.runners import (
    CONTEXT_CHARS,
    CONTEXT_WORDS,
    PatternRunner,
    Text,
    _re_twin,
    runner_for,
    words_before,
)
from tests.evals.pii_set import generate

EDGE_CASES = [
    # IBANs: compact, grouped, lower case, followed by a word or digits that look like
    # one more group, a bad check digit, two in a row, at the very start and end.
    "DE89370400440532013000",
    "Pay into DE89 3704 0044 0532 0130 00 today.",
    "I want my deposit in DE89370400440532013000 2 days from today.",
    "iban de89 3704 0044 0532 0130 00 in lower case",
    "GB82 WEST 1234 5698 7654 32 TEST and GB82WEST12345698765432",
    "bad check DE89 3704 0044 0532 0130 01, then FR1420041010050500013M02606.",
    "XX12 not an iban, AB12CD34 neither, ZZ99 9999 9999 9999 9999",
    "NL91ABNA0417164300-NL91-ABNA-0417-1643-00",
    # Emails: sub-domains, no public suffix, URL characters in the local part, unicode.
    "write to maria.gonzalez@example.com or to x@localhost and a@b",
    "ops@eu-west.mail.example.co.uk, weird/part@example.org, q?x@example.net",
    "user:pw@example.com and #tag@example.com and josé@correo.es and a@1.2.3.4",
    # A vowel sign is a word character to regex (Presidio's engine), not to re.
    "write to राम@example.com or to Ἀθηνᾶ@example.gr",
    "two@example.com@example.org and trailing.dot@example.com.",
    # Everything else the runners window: IP addresses v4 and v6, and no anchors at all.
    "hosts 192.168.10.24, 10.0.0.1:8080, ::1, fe80::1ff:fe23:4567:890a and 2001:db8::",
    "1.2.3.4",
    "nets 10.0.0.0/8, ::ffff:192.0.2.1, 64:ff9b::192.0.2.33/96, :: and x1.2.3.4 or 1.2.3.4x",
    "v1.2.3.4.5 build 300.1.1.1, 1.2.3 and 999.999.999.999; mac 00:1A:2b:3C:4d:5E",
    # Numbers the digit runs window (cards, SSNs, phones): at the very start and end,
    # after a + or a letter, glued to a word, grouped every way, in other scripts' digits.
    "4111111111111111",
    "card 4111 1111 1111 1111, +4916023808002, x4111-1111-1111-1111 and 4111-1111-1111-1111x",
    "5500 0000 0000 0004.2221000000000009 (3782 822463 10005) 6011/0009/9013/9424",
    "SSN 536-22-1234, 536 22 1234, 536.22.1234, 536221234 and a536-22-1234 or 53622-1234",
    "call +1 (415) 555-2671, +(415) 555 2671, (415) 555-2671 or 00 44 20 7946 0958 now",
    "on 2024-03-05 14:30 ticket 123-45-6789-0 and 12.34.56.78.90, 1/2/3/4/5/6/7/8/9/0/1/2/3",
    "Kartennummer ４１１１ １１１１ １１１１ １１１１ und SSN ５３６-２２-１２３４ für José",  # noqa: RUF001
    "536-22-1234",
    "nothing to find here at all",
    "",
]


@functools.cache
def _generated() -> tuple[str, ...]:
    return tuple(example.text for example in generate(300, seed=11))


def _lean_pattern_recognizers() -> list[PatternRecognizer]:
    """Every catalogue recognizer guard runs with a ``PatternRunner``."""
    out = []
    for cls in dict.fromkeys(catalogue().values()):
        if cls is not PhoneRecognizer:  # guard's own, not a pattern recognizer
            recognizer = cls()
            assert isinstance(recognizer, PatternRecognizer)
            out.append(recognizer)
    return out


def _presidio(recognizer: PatternRecognizer, text: str) -> list[tuple[str, int, int, float]]:
    found = recognizer.analyze(text, recognizer.supported_entities, None)
    return sorted((r.entity_type, r.start, r.end, r.score) for r in found if r.score > 0)


def _guard(recognizer: PatternRecognizer, text: str) -> list[tuple[str, int, int, float]]:
    run = runner_for(recognizer, recognizer.supported_entities)
    return sorted((h.entity_type, h.start, h.end, h.score) for h in run(Text(text)))


@pytest.mark.parametrize("recognizer", _lean_pattern_recognizers(), ids=lambda r: type(r).__name__)
def test_lean_runners_find_what_presidio_finds(recognizer):
    texts = [*EDGE_CASES, *_generated()]
    mismatches = [t for t in texts if _guard(recognizer, t) != _presidio(recognizer, t)]
    assert mismatches == []


def test_the_iban_runner_finds_real_ibans_and_shortens_like_presidio():
    recognizer = IbanRecognizer()
    text = "I want my deposit in DE89370400440532013000 2 days from today."
    hits = _guard(recognizer, text)
    assert [text[start:end] for _, start, end, _ in hits] == ["DE89370400440532013000"]
    assert hits == _presidio(recognizer, text)


@pytest.mark.parametrize(
    "value",
    [
        "maria@example.com",
        "x@localhost",
        "a@b",
        "weird/part@example.org",
        "user:pw@example.com",
        "a@1.2.3.4",
        "ops@mail.example.co.uk",
        "x@example.invalid",
    ],
)
def test_the_email_check_per_domain_answers_as_presidios(value):
    assert EmailRecognizer().validate_result(value) == PresidioEmail().validate_result(value)


def test_the_phone_recognizer_finds_in_digit_runs_what_it_finds_in_the_whole_text():
    recognizer = PhoneRecognizer(["US", "GB", "DE", "FR", "IN"])
    run = runner_for(recognizer, recognizer.supported_entities)
    texts = [*EDGE_CASES, *_generated()]
    found = 0
    for text in texts:
        hits = run(Text(text))
        assert hits == recognizer.hits(text), text
        found += len(hits)
    assert found > 50


# The recognizers that look only at windows, which a focus narrows (the others scan
# the whole text, focus or not).
WINDOWED = ("EMAIL_ADDRESS", "IP_ADDRESS", "IBAN_CODE", "CREDIT_CARD", "US_SSN")


def _windowed():
    recognizers = [catalogue()[entity]() for entity in WINDOWED]
    recognizers.append(PhoneRecognizer(["US", "GB", "DE", "FR", "IN"]))
    return [pytest.param(r, id=type(r).__name__) for r in recognizers]


@pytest.mark.parametrize("recognizer", _windowed())
def test_a_focused_scan_finds_every_value_across_its_focus(recognizer):
    """Where two texts meet, only values across the junction are wanted: a focused scan
    finds each of those that a whole scan finds."""
    run = runner_for(recognizer, recognizer.supported_entities)
    rng = random.Random(3)  # noqa: S311  # reproducible places, not secrets
    found = 0
    for text in [t for t in [*EDGE_CASES, *_generated()] if len(t) > 2]:
        whole = set(run(Text(text)))
        found += len(whole)
        for hit in whole:
            # Focused inside each value, and at two random places.
            focus = [rng.randrange(1, len(text)) for _ in range(2)]
            focus.append(rng.randrange(hit.start + 1, hit.end) if hit.end > hit.start + 1 else 1)
            wanted = {h for h in whole if any(h.start < at < h.end for at in focus)}
            assert wanted <= set(run(Text(text, focus))), (text, focus)
    assert found >= 40  # the texts hold values of this type to focus on


def test_a_focus_keeps_windowed_runners_off_the_rest_of_the_text():
    email = runner_for(EmailRecognizer(), [EMAIL])
    text = "write to ana@example.com, then to bob@example.org"
    at = text.index("bob@") + 2
    assert [text[h.start : h.end] for h in email(Text(text, [at]))] == ["bob@example.org"]
    assert email(Text(text, [text.index("then")])) == []
    assert len(email(Text(text))) == 2


@pytest.mark.parametrize(
    ("text", "runs"),
    [
        ("", []),
        ("no digits", []),
        ("12345 x 1 2 3 x 42", []),  # shorter than 7 characters: not runs
        ("1234567", [(0, 7, 7)]),
        ("call (415) 555-2671.", [(6, 19, 10)]),
        ("4111 1111 1111 1111 and 12", [(0, 19, 16)]),
        ("on 2024-03-05 14:30", [(3, 16, 10)]),
        ("Nr. ４１１１ ２２", [(4, 11, 6)]),  # noqa: RUF001
    ],
)
def test_digit_runs(text, runs):
    assert Text(text).digit_runs() == runs


def _iban_values() -> list[str]:
    """IBANs of every country Faker writes them for, each as written, grouped, in lower
    case, with a character changed, cut short, with a letter no IBAN has, and with
    another country's code."""
    rng = random.Random(3)  # noqa: S311  # reproducible values, not secrets
    values = []
    for locale in AVAILABLE_LOCALES:
        try:
            with warnings.catch_warnings():  # some locales are deprecated aliases
                warnings.simplefilter("ignore")
                fake = Faker(locale)
            fake.seed_instance(7)
            iban = fake.iban()
        except AttributeError:  # a locale without bank data
            continue
        at = rng.randrange(4, len(iban))
        swapped = iban[:at] + rng.choice("0123456789ABCDEFXYZ") + iban[at + 1 :]
        grouped = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        values += [iban, grouped, grouped.replace(" ", "-"), iban.lower(), swapped]
        odd = iban[:6] + "É" + iban[7:]
        values += [iban[:-2], odd, "DE" + iban[2:], iban[:2].lower() + iban[2:]]
    return values


def test_the_iban_check_answers_as_presidios():
    ours, theirs = IbanRecognizer(), PresidioIban()
    values = _iban_values()
    answers = [ours.validate_result(v) for v in values]
    assert answers == [theirs.validate_result(v) for v in values]
    assert {True, False, None} <= set(answers)  # every answer is exercised


def test_windowed_patterns_run_on_re_where_it_reads_them_as_regex_does():
    """The lean runners above are checked against Presidio with their ``re`` twins in
    play: every windowed recognizer's pattern has one."""
    for recognizer in _lean_pattern_recognizers():
        run = runner_for(recognizer, recognizer.supported_entities)
        assert isinstance(run, PatternRunner)
        if run.entity in WINDOWED:
            assert all(twin is not None for _, twin, _ in run._patterns), run.entity


@pytest.mark.parametrize(
    ("source", "flags"),
    [
        pytest.param(r"\p{Lu}\d+", 0, id="regex-only-class"),
        pytest.param(r"caf\u00e9|café", 0, id="non-ascii-pattern"),
        pytest.param(r"[[a-z]--[aeiou]]", 0, id="set-re-warns-about"),
        pytest.param(r"\d{3}", regex.BESTMATCH, id="regex-only-flag"),
        pytest.param(r"(?V1)\d{3}", 0, id="version-1"),
    ],
)
def test_no_re_twin_where_re_could_read_a_pattern_otherwise(source, flags):
    assert _re_twin(regex.compile(source, flags)) is None


def test_an_re_twin_keeps_the_patterns_flags():
    twin = _re_twin(regex.compile(r"id-\d+$", regex.IGNORECASE | regex.MULTILINE))
    assert twin is not None
    assert [m.group() for m in twin.finditer("ID-12\nid-3")] == ["ID-12", "id-3"]


def _words_before_by_findall(text: str, at: int) -> list[str]:
    """The definition: every word of the window, the last CONTEXT_WORDS kept."""
    words = re.findall(r"\w+", text[max(0, at - CONTEXT_CHARS) : at])[-CONTEXT_WORDS:]
    return [word.casefold() for word in reversed(words)]


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("Please call me on", 17),
        ("SSN: ", 5),
        ("", 0),
        ("... --- ...", 11),
        ("one two three four five six seven", 33),
        ("x" * 200 + " phone", 206),  # a word cut by the window's start is a word
        ("Straße STRASSE Ἀθηνᾶ राम 電話 ５３６", 32),  # noqa: RUF001
        ("call_me_maybe: 555", 15),
    ],
)
def test_words_before_are_the_windows_last_words(text, at):
    assert words_before(text, at) == _words_before_by_findall(text, at)


@given(st.text(alphabet=st.sampled_from("ab Z9_ \n.,-ßé्रा@\u0301日")), st.integers(0, 300))
def test_words_before_match_findall_on_any_text(text, at):
    at = min(at, len(text))
    assert words_before(text, at) == _words_before_by_findall(text, at)

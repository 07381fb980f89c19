"""The pii detector against PII hidden with Unicode (full-width and other scripts'
digits, invisible characters, Cyrillic and Greek look-alike letters), reported at
the original span; and against values split between two texts of one request.

Invisible characters are written as escapes: ``\\u200b`` zero-width space,
``\\u200c`` ZWNJ, ``\\u200d`` ZWJ, ``\\u2060`` word joiner, ``\\u00ad`` soft hyphen,
``\\ufeff`` BOM, ``\\u202e``/``\\u202c`` bidi override and pop, ``\\ufe0f``
variation selector 16, ``\\u20e3`` combining enclosing keycap. Look-alike letters
inside a value are escapes too; Cyrillic and Greek prose is written as it is."""

# ruff: noqa: RUF001  (the prose below is Cyrillic and Greek on purpose)

import pytest

from guard.detectors.base import Finding
from guard.detectors.pii.detector import PiiDetector
from guard.detectors.pii.normalize import normalize
from guard.detectors.pii.recognizers import pattern_recognizers
from guard.detectors.pii.runners import Hit
from guard.policy.actions import apply_redactions
from guard.policy.decision import Redaction
from tests.unit.test_pii import CONTACT, build

# The bundled policy's pattern types (policies/pii.yaml, less PERSON).
BUNDLED = {
    "EMAIL_ADDRESS": 0.5,
    "PHONE_NUMBER": 0.5,
    "IP_ADDRESS": 0.5,
    "IBAN_CODE": 0.5,
    "CREDIT_CARD": 0.5,
    "US_SSN": 0.5,
}
CYR_A, CYR_IE = "\u0430", "\u0415"  # Cyrillic small a, capital ie
GREEK_OMICRON = "\u03bf"


def full_width(text):
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def digits_of(text, zero):
    """``text`` with its ASCII digits written in the script whose zero is ``zero``."""
    return "".join(chr(ord(zero) + int(c)) if c.isdigit() else c for c in text)


@pytest.fixture(scope="module")
def detector():
    return build({"entities": BUNDLED})


@pytest.fixture(scope="module")
def contact():
    return build({"entities": CONTACT})


def spans(detector, text):
    return [(h.entity_type, h.start, h.end) for h in detector.analyze(text)]


def at(text, value, label):
    start = text.index(value)
    return (label, start, start + len(value))


@pytest.mark.parametrize(
    ("value", "label"),
    [
        pytest.param(full_width("4111 1111 1111 1111"), "CREDIT_CARD", id="card-full-width"),
        pytest.param(
            digits_of("4111 1111 1111 1111", "\U0001d7ce"), "CREDIT_CARD", id="card-math-bold"
        ),
        pytest.param(
            digits_of("4111 1111 1111 1111", "\u0660"), "CREDIT_CARD", id="card-arabic-indic"
        ),
        pytest.param(
            digits_of("5500 0000 0000 0004", "\u0966"), "CREDIT_CARD", id="card-devanagari"
        ),
        pytest.param("4111\u200b1111\u200b1111\u200b1111", "CREDIT_CARD", id="card-zero-width"),
        pytest.param("4111 1111\u2060 1111\u00ad 1111", "CREDIT_CARD", id="card-joiner-shy"),
        pytest.param(
            "".join(f"{d}\ufe0f\u20e3" for d in "4111111111111111"),
            "CREDIT_CARD",
            id="card-keycaps",
        ),
        pytest.param(
            "4\u03361\u03361\u03361\u0336 1111 1111 1111", "CREDIT_CARD", id="card-struck"
        ),
        pytest.param("maria@exa\u200dmple.com", "EMAIL_ADDRESS", id="email-zwj"),
        pytest.param(f"maria@ex{CYR_A}mple.com", "EMAIL_ADDRESS", id="email-cyrillic-a"),
        pytest.param(f"maria@example.c{GREEK_OMICRON}m", "EMAIL_ADDRESS", id="email-greek-o-tld"),
        pytest.param(full_width("maria@example.com"), "EMAIL_ADDRESS", id="email-full-width"),
        pytest.param("maria\ufeff@example\u200c.com", "EMAIL_ADDRESS", id="email-bom-zwnj"),
        pytest.param(full_width("+1 (415) 555-2671"), "PHONE_NUMBER", id="phone-full-width"),
        pytest.param("+1 (415) 555\u00ad-2671", "PHONE_NUMBER", id="phone-soft-hyphen"),
        pytest.param(
            digits_of("+1 (415) 555-2671", "\u06f0"), "PHONE_NUMBER", id="phone-persian-digits"
        ),
        pytest.param(
            f"D{CYR_IE}89 3704 0044 0532 0130 00", "IBAN_CODE", id="iban-cyrillic-country"
        ),
        pytest.param("GB82W\u0395S\u03a412345698765432", "IBAN_CODE", id="iban-greek-capitals"),
        pytest.param(full_width("DE89 3704 0044 0532 0130 00"), "IBAN_CODE", id="iban-full-width"),
        pytest.param(full_width("536-22-1234"), "US_SSN", id="ssn-full-width"),
        pytest.param("536\u201022\u20131234", "US_SSN", id="ssn-unicode-dashes"),
        pytest.param(digits_of("536-22-1234", "\u0660"), "US_SSN", id="ssn-arabic-indic"),
        pytest.param(full_width("203.0.113.42"), "IP_ADDRESS", id="ip-full-width"),
        pytest.param("203\u200b.0.113\u200b.42", "IP_ADDRESS", id="ip-zero-width"),
        pytest.param(
            f"{full_width('4')}\u200b111 {digits_of('1111', chr(0x0660))} "
            f"{digits_of('1111', chr(0x1D7CE))}\u2060 1111",
            "CREDIT_CARD",
            id="card-combined",
        ),
        pytest.param(
            f"{full_width('maria')}@ex{CYR_A}\u200dmple.c{GREEK_OMICRON}m",
            "EMAIL_ADDRESS",
            id="email-combined",
        ),
    ],
)
def test_a_disguised_value_is_found_at_its_original_span(detector, value, label):
    text = f"Here it is: {value} \u2014 thanks"
    assert at(text, value, label) in spans(detector, text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param(
            "Charge \u200b4111\u200b1111\u200b1111\u200b1111\u200b now",
            "4111\u200b1111\u200b1111\u200b1111",
            id="card",
        ),
        pytest.param(
            "mail \u202emaria@exa\u200dmple.com\u202c now", "maria@exa\u200dmple.com", id="email"
        ),
    ],
)
def test_invisible_characters_around_a_value_stay_outside_its_span(detector, text, value):
    """Those inside a value are in its span; those before or after it are not."""
    [(_, start, end)] = spans(detector, text)
    assert text[start:end] == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("4111\u200b1111\u200d1111\u2060 1111", id="card-invisible"),
        pytest.param(f"ma\u200bria@ex{CYR_A}mple.c{GREEK_OMICRON}m", id="email-look-alikes"),
        pytest.param(full_width("DE89 3704 0044 0532 0130 00"), id="iban-full-width"),
    ],
)
def test_redacting_a_disguised_value_removes_all_of_it(detector, value):
    text = f"Send {value} today."
    redactions = [
        Redaction(0, start, end, f"<{label}>") for label, start, end in spans(detector, text)
    ]
    [redacted] = apply_redactions([text], redactions)
    assert redacted.startswith("Send <") and redacted.endswith("> today.")
    assert redacted.isascii()  # no invisible or look-alike character is left behind


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Москва — столица России, и о ней все знают.", id="russian-prose"),
        pytest.param("Сосо и Ася ехали в Рим.", id="cyrillic-look-alike-words"),
        pytest.param("Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.", id="greek-prose"),
        pytest.param(f"Upgrade to {full_width('3.12.0')} today.", id="full-width-version"),
        pytest.param(f"Due {full_width('2024-03-05')} at {full_width('14:30')}.", id="date"),
        pytest.param(f"Due {digits_of('05/03/2024', chr(0x0660))}.", id="arabic-indic-date"),
        pytest.param(f"Order {full_width('4829173650')} shipped.", id="order-number"),
        pytest.param(
            f"Card {full_width('4111 1111 1111 1112')} fails the checksum.", id="card-bad-luhn"
        ),
        pytest.param("Great job \U0001f44d see you \U0001f600 tomorrow!", id="emoji"),
        pytest.param(
            "Die Stra\u00dfe hei\u00dft K\u00f6nigsallee, Caf\u00e9 \ufb01ne.", id="latin"
        ),
    ],
)
def test_look_alikes_that_are_not_pii_stay_unflagged(contact, text):
    assert spans(contact, text) == []


def test_an_address_at_a_cyrillic_domain_is_found_as_before(detector):
    text = "Мой адрес: почта@пример.рф, пишите."
    assert spans(detector, text) == [at(text, "почта@пример.рф", "EMAIL_ADDRESS")]


def test_normalization_keeps_words_of_other_scripts_and_maps_offsets():
    assert normalize("plain ASCII text") is None
    assert normalize("Москва и Рим") is None  # no word mixes scripts
    text = f"Сосо: mail maria@ex{CYR_A}\u200bmple.com"
    seen = normalize(text)
    assert seen is not None
    assert seen.text == "Coco: mail maria@example.com"  # both kinds of word made Latin
    assert seen.clean == f"Сосо: mail maria@ex{CYR_A}mple.com"  # look-alikes kept for NER
    start = seen.text.index("maria")
    assert seen.original_span(start, len(seen.text)) == (text.index("maria"), len(text))
    assert seen.original_index(len(seen.text)) == len(text)


def test_allow_lists_hold_the_original_value():
    detector = build({"entities": ["EMAIL_ADDRESS"], "allow": ["support@example.com"]})
    assert spans(detector, "write support@example.com") == []
    look_alike = f"write support@ex{CYR_A}mple.com"
    assert spans(detector, look_alike) == [("EMAIL_ADDRESS", 6, len(look_alike))]


def test_a_stream_holds_back_a_value_written_with_invisible_characters(detector):
    # Read as written, the zero-width space ends the digits; read as the recognizers
    # read it, the half card starts at 4111.
    assert detector.holdback("card 4111\u200b1111 11") == len("4111\u200b1111 11")
    assert detector.holdback(f"mail maria@ex{CYR_A}mple.c") == len("maria@ex.mple.c")
    assert detector.holdback("Это всё. ") == 0


def test_findings_of_a_disguised_text_are_cached_under_the_original_text(detector):
    detector._cache.clear()
    text = f"card {full_width('4111 1111 1111 1111')}"
    first = detector.analyze(text)
    assert len(detector._cache) == 1
    assert detector.analyze(text) == first
    assert len(detector._cache) == 1
    assert detector.analyze("card 4111 1111 1111 1111") == first  # same spans, another entry
    assert len(detector._cache) == 2


class RecordingNer:
    """An NER model that finds one name at the start of every text and records what
    it was given."""

    description = "recording"
    entities = ("PERSON",)

    def __init__(self):
        self.seen = []

    def analyze(self, text):
        self.seen.append(text)
        end = text.find(" ", text.find(" ") + 1)
        return [Hit("PERSON", 0, end if end > 0 else len(text), 0.9)]


def test_ner_reads_the_text_without_invisible_characters_and_without_latin_letters():
    ner = RecordingNer()
    thresholds = {"PERSON": 0.5, "EMAIL_ADDRESS": 0.5}
    detector = PiiDetector(pattern_recognizers(thresholds, ("US",), ()), thresholds, ner=ner)
    text = "Со\u200bсо Иванова пишет"  # a name of look-alike letters only
    assert spans(detector, text) == [("PERSON", 0, len("Со\u200bсо Иванова"))]
    assert ner.seen == ["Сосо Иванова пишет"]  # Cyrillic kept, zero-width space gone
    ner.seen.clear()
    detector.scan(["Hello from Maria", "Ivanova at home"])
    assert ner.seen == ["Hello from Maria", "Ivanova at home"]  # not the junction


# -- values split between texts -------------------------------------------------------------


GROUPS = ["4111 ", "1111 ", "1111 ", "1111"]


def parts(detector, texts):
    return [
        (f.label, f.text_index, texts[f.text_index][f.span[0] : f.span[1]])
        for f in detector.scan(texts)
    ]


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        pytest.param(
            ["My card is 4111 1111", " 1111 1111, charge it"],
            [("CREDIT_CARD", 0, "4111 1111"), ("CREDIT_CARD", 1, " 1111 1111")],
            id="card-between-groups",
        ),
        pytest.param(
            ["My card is 4111 11", "11 1111 1111, charge it"],
            [("CREDIT_CARD", 0, "4111 11"), ("CREDIT_CARD", 1, "11 1111 1111")],
            id="card-mid-group",
        ),
        pytest.param(
            ["4111 ", "1111 ", "1111 ", "1111"],
            [
                ("CREDIT_CARD", i, part)
                for i, part in enumerate(["4111 ", "1111 ", "1111 ", "1111"])
            ],
            id="card-group-by-group",
        ),
        pytest.param(
            ["4111 1111", "", " 1111 1111"],
            [("CREDIT_CARD", 0, "4111 1111"), ("CREDIT_CARD", 2, " 1111 1111")],
            id="card-around-an-empty-text",
        ),
        pytest.param(
            ["write to maria.gonzalez@", "example.com please"],
            [("EMAIL_ADDRESS", 0, "maria.gonzalez@"), ("EMAIL_ADDRESS", 1, "example.com")],
            id="email-at-the-at-sign",
        ),
        pytest.param(
            ["write to maria.gon", "zalez@example.com please"],
            [("EMAIL_ADDRESS", 0, "maria.gon"), ("EMAIL_ADDRESS", 1, "zalez@example.com")],
            id="email-in-the-local-part",
        ),
        pytest.param(
            ["write to maria@example.", "com please"],
            [("EMAIL_ADDRESS", 0, "maria@example."), ("EMAIL_ADDRESS", 1, "com")],
            id="email-at-a-full-stop",
        ),
        pytest.param(
            ["SSN 536-2", "2-1234 on file"],
            [("US_SSN", 0, "536-2"), ("US_SSN", 1, "2-1234")],
            id="ssn",
        ),
        pytest.param(
            [f"card {full_width('4111 1111')}", f"\u200b {full_width('1111 1111')}"],
            [
                ("CREDIT_CARD", 0, full_width("4111 1111")),
                ("CREDIT_CARD", 1, f"\u200b {full_width('1111 1111')}"),
            ],
            id="full-width-card-split",
        ),
    ],
)
def test_a_value_split_between_texts_is_reported_in_each(detector, texts, expected):
    assert parts(detector, texts) == expected


def test_a_card_written_one_digit_per_text_is_reported_in_every_text(detector):
    texts = ["Card: ", *"4111111111111111", " thanks"]
    findings = detector.scan(texts)
    assert [(f.label, f.text_index, f.span) for f in findings] == [
        ("CREDIT_CARD", i, (0, 1)) for i in range(1, 17)
    ]


def test_junctions_close_together_share_one_window():
    from guard.detectors.pii.detector import MAX_HOLD, _windows

    assert _windows([5, 6, 7], 20) == [(0, 20)]
    close = [1000, 1000 + MAX_HOLD - 1]
    assert _windows(close, 5000) == [(1000 - MAX_HOLD, 1000 + 2 * MAX_HOLD - 1)]
    far = [1000, 1000 + MAX_HOLD]
    assert _windows(far, 5000) == [
        (1000 - MAX_HOLD, 1000 + MAX_HOLD),
        (1000, 1000 + 2 * MAX_HOLD),
    ]


def test_each_part_is_at_its_own_span_and_redacting_both_removes_the_value(detector):
    texts = ["My card is 4111 11", "11 1111 1111, charge it"]
    findings = detector.scan(texts)
    assert findings == [
        Finding("pii", "CREDIT_CARD", 1.0, 0, (11, 18)),
        Finding("pii", "CREDIT_CARD", 1.0, 1, (0, 12)),
    ]
    redactions = [Redaction(f.text_index, *f.span, "<CARD>") for f in findings]
    assert apply_redactions(texts, redactions) == ["My card is <CARD>", "<CARD>, charge it"]


@pytest.mark.parametrize(
    "texts",
    [
        pytest.param(["Card 4111 1111 1111 1111 here", "and more"], id="inside-the-first"),
        pytest.param(["Card 4111 1111 1111 1111", " is mine"], id="at-the-end-of-the-first"),
        pytest.param(["Hello", "4111 1111 1111 1111 is mine"], id="at-the-start-of-the-next"),
        # Joined, "SSN" before the number raises its score: still one finding.
        pytest.param(["Note my SSN:", "536-22-1234"], id="with-a-context-word-before"),
    ],
)
def test_a_value_inside_one_text_is_reported_once(detector, texts):
    [finding] = detector.scan(texts)
    assert finding.label in {"CREDIT_CARD", "US_SSN"}


def test_sentences_in_two_texts_do_not_join_into_a_url(contact):
    assert contact.scan(["Hello there.", "How are you?"]) == []
    assert contact.scan(["Thanks.", "Can you help?"]) == []
    # Not after a full stop, a URL split between texts is found.
    assert parts(contact, ["see www.exam", "ple.com now"]) == [
        ("URL", 0, "www.exam"),
        ("URL", 1, "ple.com"),
    ]


def test_texts_that_do_not_meet_in_a_value_report_nothing_more(detector):
    texts = ["Write to maria@example.com", "Call +1 (415) 555-2671", "ok"]
    assert [(f.label, f.text_index) for f in detector.scan(texts)] == [
        ("EMAIL_ADDRESS", 0),
        ("PHONE_NUMBER", 1),
    ]


def test_a_value_across_texts_gives_way_to_a_higher_scoring_one_inside_a_text():
    """As between any two overlapping values: the higher score, then the longer, is
    reported. The junction is not read by NER, so only the texts' own findings can say
    that a name (0.9 here) covers part of what looks like an SSN across them (0.85)."""
    thresholds = {"PERSON": 0.5, "US_SSN": 0.5, "CREDIT_CARD": 0.5}
    detector = PiiDetector(
        pattern_recognizers(thresholds, ("US",), ()), thresholds, ner=RecordingNer()
    )
    assert parts(detector, ["SSN 536-22", "-1234 please"]) == [
        ("PERSON", 0, "SSN 536-22"),
        ("PERSON", 1, "-1234 please"),
    ]
    # A card number across the texts is validated (1.0): it wins over the name.
    assert parts(detector, ["card 4111 1111", " 1111 1111 ok"]) == [
        ("PERSON", 0, "card 4111"),
        ("CREDIT_CARD", 0, "4111 1111"),
        ("PERSON", 1, " 1111"),
        ("CREDIT_CARD", 1, " 1111 1111"),
    ]

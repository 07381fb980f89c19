"""The recognizers guard runs: Presidio's pattern recognizers, a faster phone
recognizer, a card recognizer that knows Mastercard's 2-series, and a policy's own
recognizers built from data.

Presidio's ``PhoneRecognizer`` runs libphonenumber's matcher over the whole text
once per region: about 30 ms of a 1 KB prompt's 35 (measured). ``PhoneRecognizer``
here finds phone-shaped candidates with one regex and asks libphonenumber about
each candidate only, with the same leniency, so the cost follows the number of
candidates, not the text's length times the regions.

Presidio's ``EmailRecognizer`` asks tldextract whether each match has a domain under
a public suffix; guard's asks once per domain (a conversation's addresses share a
few), with the same answer.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import phonenumbers
import regex
import tldextract
from phonenumbers import PhoneMetadata, PhoneNumberDesc, ValidationResult, phonenumbermatcher
from phonenumbers import phonenumberutil as _pu
from phonenumbers.phonenumber import CountryCodeSource
from presidio_analyzer import (
    AnalysisExplanation,
    EntityRecognizer,
    LocalRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerResult,
)
from presidio_analyzer.predefined_recognizers import CreditCardRecognizer
from presidio_analyzer.predefined_recognizers import EmailRecognizer as PresidioEmailRecognizer
from presidio_analyzer.predefined_recognizers import IbanRecognizer as PresidioIbanRecognizer
from presidio_analyzer.predefined_recognizers.generic import iban_patterns

from guard.detectors.pii.config import RecognizerSpec, Validator
from guard.detectors.pii.runners import Hit, words_before

PHONE = "PHONE_NUMBER"
CARD = "CREDIT_CARD"
EMAIL = "EMAIL_ADDRESS"
# Digits with the separators phone numbers are written with; 7 to 15 digits are checked.
# A candidate neither starts nor ends inside a word ("42436053-96ca" is part of a
# UUID) or at a time's colon ("2024-03-05 14:30" is a date and a time, not the
# number 2024030514).
_PHONE_CANDIDATE = r"(?<![\w+.\-/]|\d:)(?:\+|\b00)?\(?\d[\d ().\-/]{5,22}\d(?!\w|[.\-/:]\d)"
_DIGITS = regex.compile(r"\d")
# Dates, IP addresses, versions and builds ("10.0.19045.2965", "20240305.1"); a
# dotted run of three or more groups of 2 to 4 digits is how phone numbers are
# written ("415.555.2671", "01.23.45.67.89"), not versions.
_DATE_OR_VERSION = regex.compile(
    r"^(?:\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}|\d{1,3}(?:\.\d{1,3}){2,3}"
    r"|(?!\d{2,4}(?:\.\d{2,4}){2,}$)\d+(?:\.\d+)+)$"
)
_FORMATTED = regex.compile(r"[ ().\-/+]")
# What ``_parse_national`` takes (else libphonenumber's parse), and its digits.
_NATIONAL = re.compile(r"[0-9 ().\-/]+")
_NOT_DIGIT = re.compile(r"[^0-9]")
_TOO_SHORT = (
    ValidationResult.TOO_SHORT,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    ValidationResult.INVALID_LENGTH,
)


class PhoneRecognizer(LocalRecognizer):
    """Phone numbers valid in one of the regions (or in any, written with ``+``).
    A number written as a bare run of digits is only reported with a context word
    ("phone", "call" …) among the five words before it, and then with a score the
    context raises over the default threshold: order and account numbers are not
    phone numbers, and checking every digit run in every region would cost most of
    the detector's time."""

    NAME = "PhoneRecognizer"
    MIN_DIGITS = 7
    FORMATTED_SCORE = 0.5
    BARE_SCORE = 0.25
    CONTEXT = (
        "phone",
        "telephone",
        "tel",
        "cell",
        "cellphone",
        "mobile",
        "call",
        "fax",
        "whatsapp",
        "sms",
        "text",
        "dial",
        "reach",
        "contact",
    )

    def __init__(self, regions: Sequence[str]) -> None:
        # libphonenumber compiles its metadata's patterns on every use unless told to
        # keep them: a fifth of each number's check (measured).
        phonenumbers.enable_pattern_cache()
        self.regions = tuple(regions)
        # One region per country calling code: a number parsed for US is checked
        # against every region that shares +1 (CA included), so CA need not parse it again.
        by_code = {phonenumbers.country_code_for_region(r): r for r in reversed(self.regions)}
        self._dialling = tuple(sorted(by_code.values(), key=self.regions.index))
        self.candidates = regex.compile(_PHONE_CANDIDATE)
        self._context = frozenset(self.CONTEXT)
        super().__init__(supported_entities=[PHONE], context=list(self.CONTEXT), name=self.NAME)

    def load(self) -> None:
        """Nothing to load: libphonenumber's metadata is imported with it."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: Any = None
    ) -> list[RecognizerResult]:
        return [self._result(h.start, h.end, h.score) for h in self.hits(text)]

    def hits(self, text: str, windows: Sequence[tuple[int, int]] | None = None) -> list[Hit]:
        """What ``analyze`` finds, as guard's detector takes it; only in ``windows``
        where given (where the text has runs of ``MIN_DIGITS`` digits)."""
        results: list[Hit] = []
        spans = [(0, len(text))] if windows is None else windows
        for candidate in (c for lo, hi in spans for c in self.candidates.finditer(text, lo, hi)):
            at, value = _unbracketed(candidate.start(), candidate.group())
            digits = len(_DIGITS.findall(value))
            if not self.MIN_DIGITS <= digits <= 15 or _DATE_OR_VERSION.match(value):
                continue
            bare = not _FORMATTED.search(value)
            if bare and not self._context_before(text, at):
                continue
            span = self._valid_number(value)
            if span is None:
                continue
            score = self.BARE_SCORE if bare else self.FORMATTED_SCORE
            results.append(Hit(PHONE, at + span[0], at + span[1], score))
        return results

    def _context_before(self, text: str, at: int) -> bool:
        return not self._context.isdisjoint(words_before(text, at))

    def _valid_number(self, value: str) -> tuple[int, int] | None:
        """Where in ``value`` the number lies, if it is valid in one of the regions
        (a number written with + needs no region)."""
        start = len(value) - len(value.lstrip("("))
        end = len(value) - len(value.rstrip(")"))
        number = value[start : len(value) - end] if value[start:].startswith("+") else value
        if not _valid_in(number, (None,) if number.startswith("+") else self._dialling):
            return None
        offset = value.index(number)
        return offset, offset + len(number)

    def _result(self, start: int, end: int, score: float) -> RecognizerResult:
        return RecognizerResult(
            entity_type=PHONE,
            start=start,
            end=end,
            score=score,
            analysis_explanation=AnalysisExplanation(
                recognizer=self.NAME, original_score=score, textual_explanation="valid number"
            ),
            recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.NAME},
        )


@functools.lru_cache(maxsize=8192)
def _valid_in(number: str, regions: tuple[str | None, ...]) -> bool:
    """Whether ``number`` is a valid number in one of ``regions``. Cached: the same
    numbers come back with every turn of a conversation (clients resend its history),
    and libphonenumber's parse is most of this recognizer's time."""
    national = _NATIONAL.fullmatch(number) is not None and None not in regions
    digits = _NOT_DIGIT.sub("", number) if national else ""
    for region in regions:
        parsed = _parse_national(digits, region) if national else _parse(number, region)
        if parsed is not None and _is_valid(parsed) and _prefix_if_required(parsed):
            return True
    return False


def _parse(number: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(number, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        return None


def _parse_national(digits: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    """libphonenumber's ``parse(number, region, keep_raw_input=True)`` for a number
    written with ASCII digits, spaces and ``( ) . - /`` only, from its ``digits``:
    what parse does with such a number, without the steps that cannot apply to it
    (an RFC 3966 context, a leading +, an extension, letters for digits, other
    scripts' digits), which are two thirds of its time. None where parse raises.
    tests/unit/test_pii_phone.py checks it against parse in every region."""
    metadata = PhoneMetadata.metadata_for_region(region or "", None)
    if metadata is None or len(digits) < _pu._MIN_LENGTH_FOR_NSN:
        return None
    numobj = phonenumbers.PhoneNumber(raw_input=digits)
    found = _country_code(digits, metadata, numobj)
    if found is None:
        return None
    country_code, national = found
    if country_code:
        number_region = phonenumbers.region_code_for_country_code(country_code)
        if number_region != region:
            other = PhoneMetadata.metadata_for_region_or_calling_code(country_code, number_region)
            metadata = other if other is not None else metadata
    else:
        country_code, national = metadata.country_code or 0, digits
    numobj.country_code = country_code
    if len(national) < _pu._MIN_LENGTH_FOR_NSN:
        return None
    _, potential, _ = _pu._maybe_strip_national_prefix_carrier_code(national, metadata)
    if _pu._test_number_length(potential, metadata) not in _TOO_SHORT:
        national = potential
    if not _pu._MIN_LENGTH_FOR_NSN <= len(national) <= _pu._MAX_LENGTH_FOR_NSN:
        return None
    _pu._set_italian_leading_zeros_for_phone_number(national, numobj)
    numobj.national_number = int(national)
    return numobj


def _country_code(
    digits: str, metadata: PhoneMetadata, numobj: phonenumbers.PhoneNumber
) -> tuple[int, str] | None:
    """libphonenumber's ``_maybe_extract_country_code`` for a number without a +:
    the calling code written after the region's international prefix, or the
    region's own written without it, and the national number after it; ``(0, "")``
    for a national number; None where parse raises."""
    idd = re.compile(metadata.international_prefix or "NonMatch")  # re keeps it compiled
    stripped, rest = _pu._parse_prefix_as_idd(idd, digits)
    if stripped:  # dialled from this region to another country
        numobj.country_code_source = CountryCodeSource.FROM_NUMBER_WITH_IDD
        if len(rest) <= _pu._MIN_LENGTH_FOR_NSN:
            return None
        code, national = _pu._extract_country_code(rest)
        return (code, national) if code else None
    numobj.country_code_source = CountryCodeSource.FROM_DEFAULT_COUNTRY
    own = str(metadata.country_code)
    if digits.startswith(own):  # the country's own calling code, without the +
        _, after, _ = _pu._maybe_strip_national_prefix_carrier_code(digits[len(own) :], metadata)
        general = metadata.general_desc
        if (
            not _pu._match_national_number(digits, general, False)
            and _pu._match_national_number(after, general, False)
        ) or _pu._test_number_length(digits, metadata) == ValidationResult.TOO_LONG:
            numobj.country_code_source = CountryCodeSource.FROM_NUMBER_WITHOUT_PLUS_SIGN
            return metadata.country_code or 0, after
    return 0, ""


def _is_valid(parsed: phonenumbers.PhoneNumber) -> bool:
    """``is_valid_number``, asking the country's main region first: a number of that
    region is valid without trying the others that share its calling code (24 for +1).
    Where the main region has no leading digits of its own, it is the region
    libphonenumber picks for every number of its pattern, so the answer is the same."""
    types = _number_types(phonenumbers.region_code_for_country_code(parsed.country_code or 0))
    if types is not None and types(_pu.national_significant_number(parsed)):
        return True
    return phonenumbers.is_valid_number(parsed)


@functools.cache
def _number_types(region: str) -> Callable[[str], bool] | None:
    """Whether a national number is of one of ``region``'s number types (fixed line,
    mobile, toll free ...), as libphonenumber's ``_number_type_helper`` decides it,
    with one pattern per length instead of one match per type: None where the region
    is not one whose answer is the whole answer (see ``_is_valid``)."""
    metadata = PhoneMetadata.metadata_for_region(region, None)
    if metadata is None or metadata.leading_digits is not None:
        return None
    general = metadata.general_desc
    if general is None or not general.national_number_pattern:
        return None
    descs: list[PhoneNumberDesc | None] = [
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
        metadata.fixed_line,
    ]
    if not metadata.same_mobile_and_fixed_line_pattern:
        descs.append(metadata.mobile)
    typed = [d for d in descs if d is not None and d.national_number_pattern]

    def either(fitting: Sequence[PhoneNumberDesc]) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{d.national_number_pattern})" for d in fitting) or "(?!)")

    lengths = {n for d in typed for n in d.possible_length}
    by_length = {
        n: either([d for d in typed if not d.possible_length or n in d.possible_length])
        for n in lengths
    }
    any_length = either([d for d in typed if not d.possible_length])
    general_lengths = set(general.possible_length)
    pattern = re.compile(general.national_number_pattern)

    def of_a_type(national: str) -> bool:
        if general_lengths and len(national) not in general_lengths:
            return False
        of_length = by_length.get(len(national), any_length)
        return pattern.fullmatch(national) is not None and of_length.fullmatch(national) is not None

    return of_a_type


def _prefix_if_required(parsed: phonenumbers.PhoneNumber) -> bool:
    """Whether a number written in national format has the national prefix its region
    writes it with ("0" in DE or GB): libphonenumber's VALID leniency, which
    Presidio's recognizer applies, checks it after validity. Without it a US ZIP+4
    code (94105-1234) or a kernel release (5.15.0-105) is a valid German number.
    Regions none of whose formats needs the prefix (US) answer without a look."""
    if parsed.country_code_source != CountryCodeSource.FROM_DEFAULT_COUNTRY:
        return True
    if _prefix_never_required(phonenumbers.region_code_for_country_code(parsed.country_code or 0)):
        return True
    return phonenumbermatcher._is_national_prefix_present_if_required(parsed)


@functools.cache
def _prefix_never_required(region: str) -> bool:
    """Whether none of ``region``'s number formats makes libphonenumber look for the
    national prefix (a rule that is optional, or that writes the first group only)."""
    metadata = PhoneMetadata.metadata_for_region(region, None)
    return metadata is None or all(
        not rule.national_prefix_formatting_rule
        or rule.national_prefix_optional_when_formatting
        or _pu._formatting_rule_has_first_group_only(rule.national_prefix_formatting_rule)
        for rule in metadata.number_format
    )


def _unbracketed(at: int, value: str) -> tuple[int, str]:
    """The candidate without a parenthesis it does not close, and where it starts: such
    a parenthesis is the text's, as in "(129.0.6149.129)" or "order 2496688 (1 427,55 €)"."""
    opened = value.rfind("(")
    if opened == -1 or ")" in value[opened:]:
        return at, value
    if opened == 0:
        return at + 1, value[1:]
    return at, value[:opened].rstrip(" .-/")


_URL_CHARS = frozenset("/?#:")  # in a local part, they end tldextract's host early


class EmailRecognizer(PresidioEmailRecognizer):
    """Presidio's email recognizer, its public-suffix check made once per domain.

    tldextract reads the host of what it is given as a URL: after the last ``@``,
    unless a ``/``, ``?``, ``#`` or ``:`` in the local part ends the host earlier.
    Such rare values are checked whole, as Presidio does."""

    def __init__(self) -> None:
        super().__init__()
        _has_public_suffix("example.com")  # tldextract reads its suffix list (0.1 s) now

    def validate_result(self, pattern_text: str) -> bool:
        local, at, domain = pattern_text.rpartition("@")
        if not at or not _URL_CHARS.isdisjoint(local):
            return bool(super().validate_result(pattern_text))
        return _has_public_suffix(domain)


@functools.lru_cache(maxsize=4096)
def _has_public_suffix(domain: str) -> bool:
    return tldextract.extract(domain).fqdn != ""  # Presidio's check, on the host alone


class IbanRecognizer(PresidioIbanRecognizer):
    """Presidio's IBAN recognizer, its check the same with each country's format
    compiled once: Presidio's looks the format up in regex's pattern cache on every
    check, most of the check's time (it stays within 60 s, as Presidio's timeout)."""

    def validate_result(self, pattern_text: str) -> bool | None:
        if self.BOSEOS:  # exact matching asked for: Presidio's own check
            return super().validate_result(pattern_text)  # type: ignore[no-any-return]
        value = EntityRecognizer.sanitize_value(pattern_text, self.replacement_pairs)
        checked = (value[4:] + value[:2] + "00").upper().translate(self.LETTERS)
        try:
            if f"{98 - int(checked) % 97:0>2}" != value[2:4]:
                return False
        except ValueError:  # a character that is neither a digit nor a letter A-Z
            return False
        if _iban_format(value):
            return True
        return None if _iban_format(value.upper()) else False


def _iban_format(value: str) -> bool:
    pattern = _IBAN_FORMATS.get(value[:2])
    return pattern is not None and pattern.match(value) is not None


_IBAN_FORMATS = {
    country: regex.compile(pattern, regex.DOTALL | regex.MULTILINE)
    for country, pattern in iban_patterns.regex_per_country.items()
    if pattern
}


class CardRecognizer(CreditCardRecognizer):
    """Presidio's card recognizer (a Luhn-checked pattern), with the Mastercard
    numbers its pattern leaves out, those from 2221 to 2720 (issued since 2017), and
    without the digits of an international phone number: +4916023808002 is a German
    mobile number, though its digits pass the Luhn check as a 13-digit Visa's would."""

    PATTERNS = [  # noqa: RUF012  # the list Presidio's __init__ reads, as in its own class
        Pattern(
            "All Credit Cards (weak)",
            r"(?<!\+)\b(?!1\d{12}(?!\d))((4\d{3})|(5[0-5]\d{2})|(2(?:22[1-9]|2[3-9]\d|[3-6]\d{2}"
            r"|7[01]\d|720))|(6\d{3})|(1\d{3})|(3\d{3}))[- ]?(\d{3,4})[- ]?(\d{3,4})[- ]?"
            r"(\d{3,5})\b",
            0.3,
        ),
    ]


def luhn(value: str) -> bool:
    digits = [int(c) for c in value if c.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if i % 2 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return total % 10 == 0


def mod97(value: str) -> bool:
    """ISO 7064 MOD 97-10 over letters and digits, check characters first (as IBANs)."""
    chars = "".join(c for c in value.upper() if c.isalnum())
    if len(chars) < 5 or not chars.isascii():
        return False
    rotated = chars[4:] + chars[:4]
    return int("".join(str(int(c, 36)) for c in rotated)) % 97 == 1


def iban(value: str) -> bool:
    chars = "".join(c for c in value.upper() if c.isalnum())
    shaped = regex.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", chars) is not None
    return shaped and mod97(chars)


def not_repeated(value: str) -> bool:
    digits = [c for c in value if c.isdigit()]
    return len(set(digits)) > 1


VALIDATORS = {"luhn": luhn, "iban": iban, "mod97": mod97, "not_repeated": not_repeated}


class DataRecognizer(PatternRecognizer):
    """A policy's own recognizer; a validator that rejects a match drops it."""

    def __init__(self, spec: RecognizerSpec) -> None:
        flags = (
            regex.DOTALL | regex.MULTILINE | (regex.IGNORECASE if spec.case_insensitive() else 0)
        )
        self._validator = VALIDATORS[spec.validator] if spec.validator else None
        patterns = [
            Pattern(f"{spec.name}-{i}", p.regex, p.score) for i, p in enumerate(spec.all_patterns())
        ]
        super().__init__(
            supported_entity=spec.name,
            name=f"policy:{spec.name}",
            patterns=patterns,
            deny_list=list(spec.deny_list),
            context=list(spec.context),
            global_regex_flags=flags,
        )

    def validate_result(self, pattern_text: str) -> bool | None:
        if self._validator is None:
            return None
        return bool(self._validator(pattern_text))


@functools.cache
def catalogue() -> dict[str, type[EntityRecognizer]]:
    """Entity type -> the Presidio pattern recognizer class that finds it (every one
    Presidio ships that needs no model or service), with guard's phone recognizer."""
    import presidio_analyzer.predefined_recognizers as predefined  # noqa: PLC0415

    found: dict[str, type[EntityRecognizer]] = {}
    for _, cls in inspect.getmembers(predefined, inspect.isclass):
        if issubclass(cls, PatternRecognizer) and cls is not PatternRecognizer:
            for entity in cls().supported_entities:  # type: ignore[call-arg]  # all have defaults
                found.setdefault(entity, cls)
    found[PHONE] = PhoneRecognizer
    found[CARD] = CardRecognizer
    found[EMAIL] = EmailRecognizer
    found["IBAN_CODE"] = IbanRecognizer
    return found


def pattern_recognizers(
    entities: Iterable[str], regions: Sequence[str], specs: Iterable[RecognizerSpec]
) -> list[EntityRecognizer]:
    """One recognizer per wanted entity type Presidio knows, and each policy recognizer."""
    known = catalogue()
    out: list[EntityRecognizer] = [
        PhoneRecognizer(regions) if entity == PHONE else known[entity]()  # type: ignore[call-arg]
        for entity in dict.fromkeys(entities)
        if entity in known
    ]
    out.extend(DataRecognizer(spec) for spec in specs)
    return out


def patterns_of(recognizer: EntityRecognizer) -> list[regex.Pattern[str]]:
    """The regexes a recognizer matches with, for finding where a stream's tail may
    still become a match."""
    if isinstance(recognizer, PhoneRecognizer):
        return [recognizer.candidates]
    if isinstance(recognizer, PatternRecognizer):
        flags = recognizer.global_regex_flags or 0
        patterns: list[Pattern] = getattr(recognizer, "patterns", [])
        return [regex.compile(p.regex, flags) for p in patterns]
    return []


__all__ = [
    "VALIDATORS",
    "CardRecognizer",
    "DataRecognizer",
    "EmailRecognizer",
    "IbanRecognizer",
    "PhoneRecognizer",
    "Validator",
    "pattern_recognizers",
]

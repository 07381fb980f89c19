"""What the ``pii`` detector is built from.

guard's settings (``detectors.pii``), once per process: the language, the phone
regions, and the NER model, if any::

    detectors:
      pii:
        language: en
        phone_regions: [US, GB, DE, FR]
        ner: {engine: spacy, model: /models/en_core_web_lg}   # a path or an installed package
        # ner: {engine: transformers, model: /models/bert-base-ner, device: auto}

Each policy's ``detectors.pii`` section: what to look for, from what score, and
its own recognizers as data::

    entities: [EMAIL_ADDRESS, PHONE_NUMBER, PERSON]   # or {PHONE_NUMBER: 0.6, ...}
    min_score: 0.4
    recognizers:
      - name: EMPLOYEE_ID
        regex: 'EMP-\\d{6}'
        score: 0.6
        context: [employee, staff]    # a word among the 5 before raises the score
        validator: luhn
      - name: PROJECT_CODE
        deny_list: [Blue Falcon, Nightjar]
    allow: [support@example.com]     # values never flagged
    allow_patterns: ['[a-z.]+@example\\.org']
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

import regex
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Label = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$", max_length=64)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Word = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Value = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Regex = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Validator = Literal["luhn", "iban", "mod97", "not_repeated"]

# Presidio's default score for an entity its NER model found (spaCy gives none).
NER_SCORE = 0.85


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compiles(pattern: str, what: str) -> None:
    try:
        regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"{what}: {exc}") from None


class PatternSpec(Strict):
    regex: Regex
    score: Score = 0.5


class RecognizerSpec(Strict):
    """A policy's own recognizer: patterns (with context words and a validator) or a
    deny list; its name is the label its findings carry."""

    name: Label
    regex: Regex | None = None
    score: Score = 0.5
    patterns: tuple[PatternSpec, ...] = ()
    deny_list: tuple[Value, ...] = ()
    context: tuple[Word, ...] = ()
    validator: Validator | None = None
    # Unset: a deny list alone matches in any case; patterns match as written.
    ignore_case: bool | None = None

    @model_validator(mode="after")
    def _something_to_find(self) -> Self:
        if not (self.regex or self.patterns or self.deny_list):
            raise ValueError(f"recognizer {self.name}: give a regex, patterns or a deny_list")
        for spec in self.all_patterns():
            _compiles(spec.regex, f"recognizer {self.name}")
        return self

    def case_insensitive(self) -> bool:
        if self.ignore_case is not None:
            return self.ignore_case
        return not self.all_patterns()

    def all_patterns(self) -> tuple[PatternSpec, ...]:
        own = (PatternSpec(regex=self.regex, score=self.score),) if self.regex else ()
        return own + self.patterns


class PiiConfig(Strict):
    """One policy's ``detectors.pii`` section."""

    entities: tuple[Label, ...] | dict[Label, Score] = ()
    min_score: Score = 0.4
    recognizers: tuple[RecognizerSpec, ...] = ()
    allow: tuple[Value, ...] = ()
    allow_patterns: tuple[Regex, ...] = ()

    @model_validator(mode="after")
    def _valid(self) -> Self:
        names = [r.name for r in self.recognizers]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"recognizer {', '.join(twice)} defined more than once")
        for pattern in self.allow_patterns:
            _compiles(pattern, "allow_patterns")
        return self

    def thresholds(self) -> dict[str, float]:
        """Entity -> the least score reported, for this policy's entities and recognizers."""
        named = self.entities if isinstance(self.entities, dict) else {}
        wanted = [*self.entities, *(r.name for r in self.recognizers)]
        return {label: named.get(label, self.min_score) for label in wanted}


class NerOptions(Strict):
    engine: Literal["spacy", "transformers"]
    model: str = Field(description="A directory, or for spaCy an installed package's name.")
    # The model's labels -> guard's entity types; labels not named are ignored.
    labels: dict[str, Label] = Field(
        default_factory=lambda: {
            "PERSON": "PERSON",
            "PER": "PERSON",
            "GPE": "LOCATION",
            "LOC": "LOCATION",
            "LOCATION": "LOCATION",
            "ORG": "ORGANIZATION",
            "ORGANIZATION": "ORGANIZATION",
        }
    )
    score: Score = NER_SCORE  # for engines that give none (spaCy)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class PiiOptions(Strict):
    """guard's settings for the detector (``detectors.pii``)."""

    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$")] = "en"
    phone_regions: tuple[Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")], ...] = (
        "US",
        "GB",
        "DE",
        "FR",
        "IL",
        "IN",
        "CA",
        "BR",
    )
    ner: NerOptions | None = None
    inline_chars: Annotated[int, Field(ge=0)] = Field(
        default=4096,
        description="Texts up to this many characters are scanned on the event loop; "
        "longer ones in a worker thread.",
    )

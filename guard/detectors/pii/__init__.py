"""The ``pii`` detector: personal data in prompts and answers, found with Presidio.

Pattern recognizers (email, phone, card, IBAN, SSN, IP address, URL, crypto
wallet and every other Presidio ships) work with no model. Names, places and
organisations need an NER model, loaded from the path guard's settings give;
without one the detector says at start, and in /readyz, what it cannot detect.
Configuration: guard.detectors.pii.config.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from guard.detectors.pii.config import PiiConfig, PiiOptions, RecognizerSpec
from guard.detectors.registry import DetectorEntry, options_reason
from guard.errors import ConfigError

if TYPE_CHECKING:
    from guard.detectors.pii.detector import PiiDetector

log = logging.getLogger(__name__)
NAME = "pii"
# Presidio's email recognizer uses tldextract, which fetches the public suffix list
# on first use unless told to keep to its bundled copy. Set before it is imported.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
# Presidio's NLP engines, which guard does not use (it runs the recognizers itself and
# loads NER models in guard.detectors.pii.ner), pick a device when Presidio is
# imported: without this, its check imports torch and, on a GPU host, opens a CUDA
# context in every guard process, a command-line one included.
os.environ.setdefault("PRESIDIO_DEVICE", "cpu")


@contextmanager
def _presidio_loading() -> Iterator[None]:
    """While Presidio's modules load, transformers looks absent to them: Presidio
    imports it for an NLP engine guard does not use, 3 s of every start where it is
    installed. guard's own imports of it (NER, toxicity) come later and find it."""
    if "transformers" in sys.modules or "presidio_analyzer" in sys.modules:
        yield
        return
    sys.modules["transformers"] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        if sys.modules.get("transformers", ...) is None:
            del sys.modules["transformers"]


def build(options: Mapping[str, Any], configs: Sequence[BaseModel]) -> PiiDetector:
    # Presidio (and spaCy under it) load here, when a policy needs the detector: a
    # command that only checks policy files starts without them.
    with _presidio_loading():
        from guard.detectors.pii.detector import PiiDetector  # noqa: PLC0415
        from guard.detectors.pii.ner import NER_ENTITIES, load_ner  # noqa: PLC0415
        from guard.detectors.pii.recognizers import catalogue, pattern_recognizers  # noqa: PLC0415

    try:
        opts = PiiOptions.model_validate(dict(options))
    except ValidationError as exc:
        raise ConfigError(f"pii: {options_reason(exc)}") from None
    own = _own(configs)
    thresholds = _thresholds(own)
    specs = _recognizers(own)
    ner_labels = set(opts.ner.labels.values()) if opts.ner else set()
    known = set(catalogue()) | set(NER_ENTITIES) | ner_labels | {s.name for s in specs}
    if unknown := sorted(set(thresholds) - known):
        raise ConfigError(
            f"pii: unknown entity {', '.join(unknown)} (Presidio's entity types, "
            f"{', '.join(NER_ENTITIES)} with an NER model, or a policy recognizer's name)"
        )
    ner = load_ner(opts.ner) if opts.ner and set(thresholds) & ner_labels else None
    detector = PiiDetector(
        pattern_recognizers(thresholds, opts.phone_regions, specs),
        thresholds,
        ner=ner,
        allow=[value for c in own for value in c.allow],
        allow_patterns=[pattern for c in own for pattern in c.allow_patterns],
        inline_chars=opts.inline_chars,
    )
    _announce(detector)
    return detector


def _announce(detector: PiiDetector) -> None:
    """At start: what the policies asked for that this detector can find, and what not."""
    missing = detector.cannot_detect()
    found = [label for label in detector.entities() if label not in missing]
    ner = detector.ner_model or "none (pattern recognizers only; set detectors.pii.ner)"
    log.info("pii: NER model %s; detects %s", ner, ", ".join(found) or "nothing")
    if missing:
        why = (
            "no NER model is configured"
            if detector.ner_model is None
            else "the NER model has no such label"
        )
        log.warning("pii: cannot detect %s: %s", ", ".join(missing), why)


def _thresholds(configs: Sequence[PiiConfig]) -> dict[str, float]:
    """Each entity at the lowest score any policy asks for (rules may ask for more)."""
    merged: dict[str, float] = {}
    for config in configs:
        for label, score in config.thresholds().items():
            merged[label] = min(score, merged.get(label, score))
    return merged


def _recognizers(configs: Sequence[PiiConfig]) -> list[RecognizerSpec]:
    defined: dict[str, RecognizerSpec] = {}
    for config in configs:
        for spec in config.recognizers:
            if defined.setdefault(spec.name, spec) != spec:
                raise ConfigError(
                    f"pii: recognizer {spec.name} is defined differently by two policies; "
                    "one label must mean one thing (rename one of them)"
                )
    return list(defined.values())


def labels(configs: Sequence[BaseModel]) -> frozenset[str]:
    return frozenset(label for config in _own(configs) for label in config.thresholds())


def _own(configs: Sequence[BaseModel]) -> list[PiiConfig]:
    for config in configs:
        if not isinstance(config, PiiConfig):
            raise TypeError(f"pii: expected PiiConfig, got {type(config).__name__}")
    return [c for c in configs if isinstance(c, PiiConfig)]


ENTRY = DetectorEntry(factory=build, config=PiiConfig, labels=labels)

__all__ = ["ENTRY", "NAME", "PiiConfig", "PiiOptions"]

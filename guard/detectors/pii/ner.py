"""Named entities (PERSON, LOCATION, ORGANIZATION) from a local NER model.

Two engines: a spaCy pipeline (a directory, or an installed package such as
``en_core_web_lg``) and a Hugging Face token-classification model directory run
with transformers. Nothing is downloaded: a model that is not where the settings
say stops the start with a message naming the path.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Protocol

from presidio_analyzer import AnalysisExplanation, RecognizerResult

from guard.detectors.pii.config import NerOptions
from guard.errors import ConfigError

log = logging.getLogger(__name__)
NER_ENTITIES = ("PERSON", "LOCATION", "ORGANIZATION")
_NER_NAME = "ner"


class Ner(Protocol):
    description: str
    entities: frozenset[str]  # what this model can find, as guard's entity types

    def analyze(self, text: str) -> list[RecognizerResult]: ...


def load_ner(options: NerOptions) -> Ner:
    if options.engine == "spacy":
        return SpacyNer(options)
    return TransformersNer(options)


def _result(entity: str, start: int, end: int, score: float, model: str) -> RecognizerResult:
    return RecognizerResult(
        entity_type=entity,
        start=start,
        end=end,
        score=score,
        analysis_explanation=AnalysisExplanation(
            recognizer=_NER_NAME, original_score=score, textual_explanation=model
        ),
        recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: _NER_NAME},
    )


def _missing(options: NerOptions) -> ConfigError:
    how = (
        "install the model's package (e.g. `pip install en_core_web_lg` on a machine "
        "with internet) or copy its directory here"
        if options.engine == "spacy"
        else "copy a token-classification model directory (config.json, weights, "
        "tokenizer) here from a machine with internet"
    )
    return ConfigError(f"ner: model not found: {options.model} ({how})")


def _is_path(model: str) -> bool:
    return "/" in model or model.startswith(".")


class SpacyNer:
    def __init__(self, options: NerOptions) -> None:
        import spacy  # noqa: PLC0415  # only with NER configured

        model = options.model
        if _is_path(model) and not Path(model).is_dir():
            raise _missing(options)
        if not _is_path(model) and not spacy.util.is_package(model):
            raise _missing(options)
        try:
            nlp = spacy.load(model)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"ner: spaCy could not load {model}: {exc}") from None
        if "ner" not in nlp.pipe_names:
            raise ConfigError(f"ner: the spaCy pipeline {model} has no 'ner' component")
        for name in nlp.pipe_names:  # only the entities are needed
            if name not in {"ner", "tok2vec", "transformer"}:
                nlp.disable_pipe(name)
        self._nlp = nlp
        self._labels = options.labels
        self._score = options.score
        model_labels: tuple[str, ...] = nlp.get_pipe("ner").labels  # type: ignore[attr-defined]
        self.entities = frozenset(
            options.labels[lab] for lab in model_labels if lab in options.labels
        )
        meta = nlp.meta
        self.description = (
            f"spacy:{meta.get('lang', '?')}_{meta.get('name', '?')}@{meta.get('version', '?')}"
        )

    def analyze(self, text: str) -> list[RecognizerResult]:
        doc = self._nlp(text)
        return [
            _result(self._labels[ent.label_], ent.start_char, ent.end_char, self._score, "spacy")
            for ent in doc.ents
            if ent.label_ in self._labels
        ]


class TransformersNer:
    def __init__(self, options: NerOptions) -> None:
        path = Path(options.model)
        if not (path / "config.json").is_file():
            raise _missing(options)
        if importlib.util.find_spec("transformers") is None:
            raise ConfigError(
                "ner: engine transformers needs the transformers and torch packages "
                "(pip install 'guard[ner]')"
            )
        import torch  # noqa: PLC0415
        from transformers import pipeline  # noqa: PLC0415

        cuda = torch.cuda.is_available()
        device = (
            "cuda" if options.device == "cuda" or (options.device == "auto" and cuda) else "cpu"
        )
        try:
            self._pipe = pipeline(
                "token-classification",
                model=str(path),
                tokenizer=str(path),
                aggregation_strategy="simple",
                device=device,
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"ner: transformers could not load {path}: {exc}") from None
        self._labels = options.labels
        id2label: dict[Any, str] = dict(self._pipe.model.config.id2label or {})
        self.entities = frozenset(
            options.labels[lab] for lab in map(_bare, id2label.values()) if lab in options.labels
        )
        self.description = f"transformers:{path.name}@{device}"

    def analyze(self, text: str) -> list[RecognizerResult]:
        found: list[dict[str, Any]] = self._pipe(text)
        out = []
        for ent in found:
            entity = self._labels.get(_bare(str(ent["entity_group"])))
            if entity is not None and ent["end"] > ent["start"]:
                score = min(1.0, max(0.0, float(ent["score"])))
                out.append(
                    _result(entity, int(ent["start"]), int(ent["end"]), score, "transformers")
                )
        return out


def _bare(label: str) -> str:
    """``B-PER`` and ``I-PER`` are ``PER``."""
    return label[2:] if label[:2] in {"B-", "I-", "E-", "S-"} else label

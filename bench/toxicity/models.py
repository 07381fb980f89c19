"""The models the bench runs, and guard's toxicity detector built on each.

- ``tiny``: the test suite's 2-layer BERT (hidden size 16) from
  ``tests.fakes.classifiers.hf_classifier``: next to no compute, so its figures are
  guard's own overhead (the batcher, tokenization, tensor building, the loop).
- ``profanity``: guard's built-in default (``detectors.toxicity: {}``),
  alt-profanity-check's linear SVM; its weights ship in the package.
- ``bert-mini`` / ``roberta-base``: randomly initialised models of real size (the shapes
  of prajjwal1/bert-mini and of roberta-base, as toxicity classifiers with Detoxify's six
  labels), saved with ``save_pretrained`` and loaded through guard's ``transformers``
  backend. Their tokenizer is a WordPiece vocabulary written from the bench's own texts
  (one token per word or punctuation mark, about as many tokens as a real tokenizer
  makes of plain English), so the scores mean nothing but the compute is the real one.

Every model is written into a temporary directory; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.toxicity import texts as tx
from guard.detectors.registry import DetectorRegistry
from guard.detectors.toxicity.detector import ToxicityDetector

TINY = "tiny"
PROFANITY = "profanity"
CONFIGS = ("bert-mini", "roberta-base")
LABELS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_TOKENS = 512


@dataclass(frozen=True, slots=True)
class Model:
    """A model the bench runs: its name, guard's ``detectors.toxicity`` settings for it
    (without ``batch``) and a line for the report."""

    name: str
    options: dict[str, Any]
    about: str
    torch: bool  # a transformers model (guard's TorchClassifier)


def _params(model: Any) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{n / 1e6:.1f} M parameters" if n >= 1e5 else f"{n / 1e3:.1f} k parameters"


def quiet() -> None:
    """No progress bars from transformers while the bench writes and loads models."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def tiny(path: Path, device: str, threads: int | None) -> Model:
    import transformers

    from tests.fakes.classifiers import hf_classifier

    hf_classifier(path, max_positions=MAX_TOKENS)
    config = transformers.AutoConfig.from_pretrained(str(path))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path))
    labels = ", ".join(config.id2label.values())
    about = (
        f"tests.fakes.classifiers.hf_classifier: BERT, {config.num_hidden_layers} layers, "
        f"hidden {config.hidden_size}, {_params(model)}, labels {labels}, word-level "
        f"vocabulary of {config.vocab_size} (most words of the bench's texts are "
        "[UNK]: the same token count)"
    )
    return Model(TINY, _torch_options(path, device, threads), about, torch=True)


def profanity() -> Model:
    about = "guard's built-in default (`detectors.toxicity: {}`): alt-profanity-check, linear SVM"
    return Model(PROFANITY, {}, about, torch=False)


def sized(name: str, path: Path, device: str, threads: int | None) -> Model:
    """A randomly initialised ``bert-mini`` or ``roberta-base`` classifier, saved."""
    import torch
    import transformers

    vocab = [*SPECIAL, *(w for w in tx.words(t.text for t in tx.pool()) if w not in SPECIAL)]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    tokenizer.model_max_length = MAX_TOKENS
    tokenizer.save_pretrained(path)
    labels: dict[str, Any] = {
        "num_labels": len(LABELS),
        "id2label": dict(enumerate(LABELS)),
        "label2id": {label: i for i, label in enumerate(LABELS)},
        "problem_type": "multi_label_classification",
    }
    config: Any
    if name == "bert-mini":  # prajjwal1/bert-mini's shape
        config = transformers.BertConfig(
            hidden_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=1024,
            max_position_embeddings=MAX_TOKENS,
            **labels,
        )
    elif name == "roberta-base":
        # RobertaConfig()'s defaults (12 layers, hidden 768, vocabulary 50,265); only the
        # padding id follows the BERT tokenizer's ([PAD] = 0), so that positions count
        # from the first token as RoBERTa's do.
        config = transformers.RobertaConfig(
            pad_token_id=0, bos_token_id=2, eos_token_id=3, **labels
        )
    else:
        raise ValueError(f"unknown model config {name!r}")
    if len(vocab) > config.vocab_size:
        raise ValueError(f"{len(vocab)} words do not fit {name}'s vocabulary")
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    model.save_pretrained(path)
    about = (
        f"randomly initialised `{type(model).__name__}` with {name}'s shape: "
        f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_attention_heads} heads, FFN {config.intermediate_size}, "
        f"{_params(model)}; {len(LABELS)} labels (multi-label); WordPiece vocabulary of the "
        f"bench's {len(vocab) - len(SPECIAL)} words"
    )
    return Model(name, _torch_options(path, device, threads), about, torch=True)


def _torch_options(path: Path, device: str, threads: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {"backend": "transformers", "model": str(path), "device": device}
    if threads is not None:
        options["threads"] = threads
    return options


def build(model: Model, max_size: int, max_wait_ms: float) -> ToxicityDetector:
    """guard's detector, built as guard builds it from its settings."""
    options = {**model.options, "batch": {"max_size": max_size, "max_wait_ms": max_wait_ms}}
    detector = DetectorRegistry.builtin().build("toxicity", options)
    if not isinstance(detector, ToxicityDetector):
        raise TypeError(f"expected ToxicityDetector, got {type(detector).__name__}")
    return detector


def token_counts(path: Path, texts: Sequence[str]) -> list[int]:
    """Tokens per text (special tokens included) under the model directory's tokenizer."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return [len(ids) for ids in tokenizer(list(texts))["input_ids"]]

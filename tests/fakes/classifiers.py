"""Tiny, randomly initialised text classifiers written to disk the way real ones are:
a Hugging Face model directory, and a Detoxify checkpoint beside its base model's
config and tokenizer. guard loads them through its real loading code (a 2-layer BERT
with a word-level vocabulary: about 100 KB, loaded in a fraction of a second).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import transformers

WORDS = (
    "you",
    "are",
    "a",
    "the",
    "an",
    "idiot",
    "stupid",
    "moron",
    "kind",
    "nice",
    "lovely",
    "day",
    "have",
    "thanks",
    "for",
    "help",
    "i",
    "will",
    "hurt",
    "kill",
    "people",
    "like",
    "them",
    "hate",
    "love",
    "this",
    "is",
    "great",
    "terrible",
    "awful",
    "what",
    "why",
    "how",
    "please",
    "and",
    "or",
    "not",
    "no",
    "yes",
    "good",
    "bad",
    "very",
    "so",
    "much",
    "today",
    "tomorrow",
)
DETOXIFY_CLASSES = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")


def _tokenizer(path: Path) -> transformers.PreTrainedTokenizerBase:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", ",", "!", "?"]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return transformers.BertTokenizerFast(vocab=str(path / "vocab.txt"))


def _config(
    labels: Sequence[str], max_positions: int, multi_label: bool
) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=len(WORDS) + 9,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_positions,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )


def _model(
    config: transformers.BertConfig, seed: int, bias: Sequence[float] | None
) -> transformers.BertForSequenceClassification:
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(config)
    if bias is not None:  # a classifier sure of its answer whatever the text
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(list(bias)))
    return model.eval()


def hf_classifier(
    path: Path,
    labels: Sequence[str] = ("toxicity", "insult"),
    *,
    multi_label: bool = True,
    max_positions: int = 64,
    seed: int = 0,
    bias: Sequence[float] | None = None,
    licence: str | None = "apache-2.0",
) -> Path:
    """A text-classification model directory (config.json, weights, tokenizer)."""
    tokenizer = _tokenizer(path)
    tokenizer.model_max_length = max_positions
    tokenizer.save_pretrained(path)
    _model(_config(labels, max_positions, multi_label), seed, bias).save_pretrained(path)
    if licence:
        (path / "README.md").write_text(f"---\nlicense: {licence}\n---\n# tiny\n", "utf-8")
    return path


def detoxify_checkpoint(
    path: Path,
    classes: Sequence[str] = DETOXIFY_CLASSES,
    *,
    seed: int = 0,
    bias: Sequence[float] | None = None,
    max_positions: int = 64,
    outputs: int | None = None,
) -> Path:
    """A directory as ``guard models pull detoxify-*`` leaves it: the base model's
    config and tokenizer, and a checkpoint in Detoxify's format (its training config
    and the state dict) named like Detoxify's own. ``outputs``: more heads than named
    classes, as Detoxify's ``unbiased`` checkpoint has (16 for 7 names)."""
    tokenizer = _tokenizer(path)
    tokenizer.model_max_length = max_positions
    tokenizer.save_pretrained(path)
    heads = [*classes, *(f"aux_{i}" for i in range((outputs or len(classes)) - len(classes)))]
    config = _config(heads, max_positions, multi_label=True)
    config.save_pretrained(path)
    model = _model(config, seed, bias)
    checkpoint = {
        "config": {
            "arch": {
                "type": "BERT",
                "args": {
                    "num_classes": len(heads),
                    "model_type": "bert-base-uncased",  # a hub name, as Detoxify's own
                    "model_name": "BertForSequenceClassification",
                    "tokenizer_name": "BertTokenizerFast",
                },
            },
            "dataset": {"type": "JigsawDataOriginal", "args": {"classes": list(classes)}},
        },
        "state_dict": model.state_dict(),
    }
    torch.save(checkpoint, path / "toxic_tiny-00000000.ckpt")
    return path

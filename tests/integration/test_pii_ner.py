"""NER models load from local paths through the real loading code: spaCy pipelines
(a directory) and Hugging Face token-classification models (transformers). The
models are built here, small and untrained or rule-based: nothing is downloaded."""

import json

import pytest

from guard.detectors.pii.config import PiiConfig
from guard.detectors.registry import DetectorRegistry
from guard.errors import ConfigError

spacy = pytest.importorskip("spacy")


def build(options, entities=("PERSON", "LOCATION", "ORGANIZATION", "EMAIL_ADDRESS")):
    config = PiiConfig.model_validate({"entities": list(entities)})
    return DetectorRegistry.builtin().build("pii", options, [config])


@pytest.fixture(scope="module")
def ruler_pipeline(tmp_path_factory):
    """A spaCy pipeline whose `ner` finds two names and a city by rule."""
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", name="ner")
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": "Maria Gonzalez"},
            {"label": "PERSON", "pattern": "John"},
            {"label": "GPE", "pattern": "Lisbon"},
        ]
    )
    path = tmp_path_factory.mktemp("spacy") / "ruler-ner"
    nlp.meta["name"] = "ruler_ner"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def trained_shape_pipeline(tmp_path_factory):
    """A statistical NER component, randomly initialised: the shape a real model has."""
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner")
    for label in ("PERSON", "ORG"):
        ner.add_label(label)
    nlp.initialize()
    path = tmp_path_factory.mktemp("spacy") / "random-ner"
    nlp.to_disk(path)
    return path


def test_a_spacy_pipeline_from_a_directory_finds_names(ruler_pipeline):
    detector = build({"ner": {"engine": "spacy", "model": str(ruler_pipeline)}})
    text = "Maria Gonzalez flew to Lisbon; mail maria@example.com"
    found = [(r.entity_type, text[r.start : r.end]) for r in detector.analyze(text)]
    assert found == [
        ("PERSON", "Maria Gonzalez"),
        ("LOCATION", "Lisbon"),
        ("EMAIL_ADDRESS", "maria@example.com"),
    ]
    info = detector.describe()
    assert info["ner"].startswith("spacy:en_ruler_ner")
    assert info["cannot_detect"] == ["ORGANIZATION"]  # the model has no such label


def test_with_ner_the_stream_holds_a_trailing_name(ruler_pipeline):
    detector = build({"ner": {"engine": "spacy", "model": str(ruler_pipeline)}})
    assert detector.holdback("Please ask Maria") == len("Maria")
    assert detector.holdback("Please ask Maria Gonz") == len("Maria Gonz")
    assert detector.holdback("Please ask her. ") == 0


def test_a_statistical_spacy_ner_loads_and_runs(trained_shape_pipeline):
    detector = build({"ner": {"engine": "spacy", "model": str(trained_shape_pipeline)}})
    assert detector.describe()["cannot_detect"] == ["LOCATION"]
    text = "John Smith works at Acme in Berlin."
    for r in detector.analyze(text):  # untrained: whatever it finds is well formed
        assert r.entity_type in {"PERSON", "ORGANIZATION"}
        assert 0 <= r.start < r.end <= len(text)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"engine": "spacy", "model": "/nonexistent/en_core_web_lg"},
            "/nonexistent/en_core_web_lg",
            id="spacy-path",
        ),
        pytest.param(
            {"engine": "spacy", "model": "en_core_web_not_installed"},
            "en_core_web_not_installed",
            id="spacy-package",
        ),
        pytest.param(
            {"engine": "transformers", "model": "/nonexistent/bert-ner"},
            "/nonexistent/bert-ner",
            id="transformers-path",
        ),
    ],
)
def test_a_missing_model_stops_the_build_naming_it(options, message):
    with pytest.raises(ConfigError, match=f"model not found: {message}"):
        build({"ner": options})


def test_no_ner_model_is_loaded_when_no_policy_wants_names(tmp_path):
    # A missing model is only an error where a policy needs named entities.
    detector = build({"ner": {"engine": "spacy", "model": "/nonexistent"}}, ["EMAIL_ADDRESS"])
    assert detector.describe()["ner"] is None


@pytest.fixture(scope="module")
def bert_ner(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("hf") / "tiny-bert-ner"
    path.mkdir()
    words = ["maria", "gonzalez", "lives", "in", "lisbon", "and", "works", "at", "acme"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, ".", ","]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizerFast(vocab=str(path / "vocab.txt"))
    tokenizer.save_pretrained(path)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = transformers.BertForTokenClassification(config)
    with torch.no_grad():  # untrained, but sure of one thing: every word begins a name
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 9.0, 0, 0, 0, 0, 0]))
    model.save_pretrained(path)
    assert json.loads((path / "config.json").read_text())["id2label"]["1"] == "B-PER"
    return path


def test_a_transformers_token_classifier_from_a_directory(bert_ner):
    detector = build({"ner": {"engine": "transformers", "model": str(bert_ner), "device": "cpu"}})
    info = detector.describe()
    assert info["ner"] == "transformers:tiny-bert-ner@cpu"
    assert info["cannot_detect"] == []
    text = "maria gonzalez lives in lisbon and works at acme ."
    results = detector.analyze(text)
    assert [text[r.start : r.end] for r in results] == text.split()
    assert {r.entity_type for r in results} == {"PERSON"}
    assert all(0.99 < r.score <= 1.0 for r in results)

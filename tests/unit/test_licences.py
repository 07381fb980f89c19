"""The licence catalogue: its terms, its names, and how model settings take them."""

import pytest

from guard.errors import ConfigError
from guard.registry.cards import LicenceCard, ModelCard
from guard.registry.licences import CatalogueError, catalogue, lookup, parse
from guard.settings import Licence, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("GUARD_"):
            monkeypatch.delenv(name)


LLAMA_MAU = 700_000_000


@pytest.mark.parametrize(
    ("licence_id", "commercial", "attribution", "share_alike", "threshold"),
    [
        pytest.param("apache-2.0", True, False, False, None, id="apache-2.0"),
        pytest.param("mit", True, False, False, None, id="mit"),
        pytest.param("bsd-3-clause", True, False, False, None, id="bsd-3-clause"),
        pytest.param("gpl-3.0", True, False, True, None, id="gpl-3.0"),
        pytest.param("agpl-3.0", True, False, True, None, id="agpl-3.0"),
        pytest.param("llama2", True, True, True, LLAMA_MAU, id="llama2"),
        pytest.param("llama3", True, True, True, LLAMA_MAU, id="llama3"),
        pytest.param("llama3.1", True, True, True, LLAMA_MAU, id="llama3.1"),
        pytest.param("llama3.2", True, True, True, LLAMA_MAU, id="llama3.2"),
        pytest.param("llama3.3", True, True, True, LLAMA_MAU, id="llama3.3"),
        pytest.param("bigscience-bloom-rail-1.0", True, False, True, None, id="bloom-rail"),
        pytest.param("bigscience-openrail-m", True, False, True, None, id="bigscience-openrail"),
        pytest.param("bigcode-openrail-m", True, False, True, None, id="bigcode-openrail-m"),
        pytest.param("creativeml-openrail-m", True, False, True, None, id="creativeml"),
        pytest.param("openrail", True, False, True, None, id="openrail"),
        pytest.param("cc0-1.0", True, False, False, None, id="cc0"),
        pytest.param("cc-by-4.0", True, True, False, None, id="cc-by"),
        pytest.param("cc-by-sa-4.0", True, True, True, None, id="cc-by-sa"),
        pytest.param("cc-by-nc-4.0", False, True, False, None, id="cc-by-nc"),
        pytest.param("cc-by-nc-sa-4.0", False, True, True, None, id="cc-by-nc-sa"),
        pytest.param("falcon-180b-tii-license-1.0", True, True, True, None, id="falcon-180b"),
        pytest.param("gemma", True, True, True, None, id="gemma"),
        pytest.param("qwen", True, True, False, 100_000_000, id="qwen"),
        pytest.param("qwen-research", False, True, False, None, id="qwen-research"),
        pytest.param("mrl", False, True, False, None, id="mistral-research"),
        pytest.param("mnpl", False, True, False, None, id="mistral-non-production"),
        pytest.param("deepseek", True, False, True, None, id="deepseek"),
    ],
)
def test_catalogue_terms(licence_id, commercial, attribution, share_alike, threshold):
    entry = lookup(licence_id)
    assert entry is not None
    assert entry.id == licence_id
    terms = (entry.commercial_use, entry.attribution_required, entry.share_alike)
    assert terms == (commercial, attribution, share_alike)
    assert entry.user_threshold == threshold
    assert entry.url.scheme == "https"
    assert entry.notes
    assert "\n" not in entry.notes


@pytest.mark.parametrize(
    ("licence_id", "restriction"),
    [
        pytest.param("llama2", "improve any other large language model", id="llama2-no-improving"),
        pytest.param("llama2", "Acceptable Use Policy", id="llama2-aup"),
        pytest.param("llama3", "improve any other large language model", id="llama3-no-improving"),
        pytest.param("llama3.1", '"Llama"', id="llama3.1-name-prefix"),
        pytest.param("llama3.2", "EU", id="llama3.2-multimodal-eu"),
        pytest.param("falcon-180b-tii-license-1.0", "Hosting Use", id="falcon-hosting"),
        pytest.param("bigscience-bloom-rail-1.0", "medical advice", id="bloom-rail-medical"),
        pytest.param("bigcode-openrail-m", "malware", id="bigcode-malware"),
        pytest.param("creativeml-openrail-m", "minors", id="creativeml-minors"),
        pytest.param("deepseek", "military", id="deepseek-military"),
        pytest.param("gemma", "Prohibited Use Policy", id="gemma-prohibited-use"),
        pytest.param("agpl-3.0", "over a network", id="agpl-network"),
        pytest.param("mrl", "research purposes only", id="mrl-research-only"),
    ],
)
def test_catalogue_records_use_restrictions(licence_id, restriction):
    entry = lookup(licence_id)
    assert entry is not None
    assert any(restriction in text for text in entry.use_restrictions)


def test_llama_3_1_dropped_the_ban_on_improving_other_models():
    for licence_id in ("llama3.1", "llama3.2", "llama3.3"):
        entry = lookup(licence_id)
        assert entry is not None
        assert not any("other large language model" in r for r in entry.use_restrictions)


def test_every_name_resolves_to_its_own_entry():
    for entry in catalogue().licences:
        for name in (entry.id, *entry.aliases):
            assert lookup(name) is entry
            assert lookup(name.upper()) is entry


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("llama2", "llama2", id="id"),
        pytest.param("llama-2", "llama2", id="alias"),
        pytest.param("llama2-community", "llama2", id="community-alias"),
        pytest.param("Llama-2-Community", "llama2", id="any-case"),
        pytest.param("  LLAMA2 ", "llama2", id="blanks-around"),
        pytest.param("Apache-2.0", "apache-2.0", id="spdx-case"),
        pytest.param("tongyi-qianwen", "qwen", id="qwen-by-old-name"),
        pytest.param("falcon-180b", "falcon-180b-tii-license-1.0", id="falcon-short"),
        pytest.param("CC-BY-NC", "cc-by-nc-4.0", id="cc-without-version"),
        pytest.param("acme-licence", None, id="unknown"),
        pytest.param("", None, id="empty"),
    ],
)
def test_lookup_by_id_or_alias_in_any_case(name, expected):
    entry = lookup(name)
    assert (entry.id if entry else None) == expected


def _catalogue_text(*entries: str) -> str:
    return "licences:\n" + "".join(entries)


_ENTRY = (
    "  - {{id: {id}, name: N, aliases: [{aliases}], url: 'https://example.org/l',"
    " commercial_use: true, attribution_required: false, share_alike: false,"
    " notes: n{extra}}}\n"
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            _catalogue_text(_ENTRY.format(id="a", aliases="x", extra=""))
            + _ENTRY.format(id="b", aliases="x", extra=""),
            "'x' names both a and b",
            id="alias-twice",
        ),
        pytest.param(
            _catalogue_text(_ENTRY.format(id="a", aliases="", extra=""))
            + _ENTRY.format(id="a", aliases="", extra=""),
            "'a' names both a and a",
            id="id-twice",
        ),
        pytest.param(
            _catalogue_text(_ENTRY.format(id="MIT", aliases="", extra="")),
            "lower case",
            id="id-not-normalised",
        ),
        pytest.param(
            _catalogue_text(_ENTRY.format(id="a", aliases="", extra=", osi: true")),
            "licences.0.osi: Extra inputs are not permitted",
            id="unknown-key",
        ),
        pytest.param(
            _catalogue_text(_ENTRY.format(id="a", aliases="", extra=", user_threshold: 0")),
            "licences.0.user_threshold",
            id="threshold-not-positive",
        ),
        pytest.param("licences: [\n", "not valid YAML", id="bad-yaml"),
    ],
)
def test_a_broken_catalogue_names_its_problem(text, problem):
    with pytest.raises(CatalogueError) as err:
        parse(text)
    assert problem in str(err.value)


def test_the_shipped_catalogue_is_valid_and_loaded_once():
    assert catalogue() is catalogue()
    assert len(set(catalogue().ids)) == len(catalogue().licences)


def _card(licence: object) -> LicenceCard:
    return LicenceCard.from_settings(Licence.model_validate(licence))


def test_a_plain_id_takes_every_term_from_the_catalogue():
    card = _card("llama-2")
    entry = lookup("llama2")
    assert entry is not None
    assert card == LicenceCard(
        id="llama2",
        name="Llama 2 Community License Agreement",
        commercial_use=True,
        attribution_required=True,
        share_alike=True,
        restrictions=entry.use_restrictions,
        user_threshold=LLAMA_MAU,
        catalogued=True,
        source_url=None,
        revision=None,
    )


@pytest.mark.parametrize(
    ("override", "field", "value"),
    [
        pytest.param({"commercial_use": False}, "commercial_use", False, id="commercial"),
        pytest.param({"user_threshold": None}, "user_threshold", None, id="separate-agreement"),
        pytest.param({"user_threshold": 5}, "user_threshold", 5, id="threshold"),
        pytest.param(
            {"restrictions": ["internal only"]},
            "restrictions",
            ("internal only",),
            id="restrictions",
        ),
        pytest.param(
            {"attribution_required": False}, "attribution_required", False, id="attribution"
        ),
        pytest.param({"share_alike": False}, "share_alike", False, id="share-alike"),
        pytest.param({"revision": "abc123"}, "revision", "abc123", id="revision"),
    ],
)
def test_keys_given_override_the_catalogue(override, field, value):
    card = _card({"id": "LLAMA3.1", **override})
    assert getattr(card, field) == value
    assert (card.id, card.catalogued) == ("llama3.1", True)
    untouched = _card("llama3.1")
    others = {"commercial_use", "share_alike", "user_threshold"} - {field}
    assert all(getattr(card, k) == getattr(untouched, k) for k in others)


def test_an_uncatalogued_licence_takes_its_terms_from_the_settings():
    card = _card({"id": "acme-model-licence", "commercial_use": False})
    assert card == LicenceCard(
        id="acme-model-licence",
        name="acme-model-licence",
        commercial_use=False,
        attribution_required=False,
        share_alike=False,
        restrictions=(),
        user_threshold=None,
        catalogued=False,
        source_url=None,
        revision=None,
    )


@pytest.mark.parametrize(
    ("licence", "key"),
    [
        pytest.param("acme-model-licence", "models.0.licence.commercial_use", id="short-form"),
        pytest.param("{id: acme-model-licence}", "models.0.licence.commercial_use", id="mapping"),
        pytest.param(
            "{id: acme, commercial_use: null}", "models.0.licence.commercial_use", id="null"
        ),
        pytest.param("{commercial_use: true}", "models.0.licence.id", id="no-id"),
        pytest.param("{id: mit, osi: true}", "models.0.licence.osi", id="unknown-key"),
        pytest.param("{id: mit, user_threshold: 0}", "models.0.licence.user_threshold", id="zero"),
    ],
)
def test_a_licence_without_its_terms_is_an_error_naming_the_key(tmp_path, licence, key):
    path = tmp_path / "guard.yaml"
    path.write_text(f"models:\n  - {{name: m, upstream: local, licence: {licence}}}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert f"{path}: {key}:" in message
    assert "\n" not in message
    if key.endswith("commercial_use"):
        assert "required" in message
        assert "apache-2.0, mit" in message  # a few known ids, to find the right one
        assert "`guard licences`" in message


def test_short_form_from_the_environment(monkeypatch):
    monkeypatch.setenv("GUARD_MODELS", '[{"name": "m", "upstream": "local", "licence": "gemma"}]')
    [model] = Settings().models
    card = ModelCard.from_settings(model).licence
    assert (card.id, card.name, card.catalogued) == ("gemma", "Gemma Terms of Use", True)


def test_the_default_model_is_apache_licensed_from_the_catalogue():
    card = ModelCard.from_settings(Settings().models[0])
    assert (card.licence.id, card.licence.catalogued, card.licence.commercial_use) == (
        "apache-2.0",
        True,
        True,
    )
    assert card.licence.source_url == "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct"


def test_licence_fields_carry_every_card_term():
    fields = ModelCard.from_settings(Settings().models[0]).licence_fields()
    assert set(fields) == set(LicenceCard.__dataclass_fields__)
    assert fields["restrictions"] == []

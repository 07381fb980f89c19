"""`guard models` and `guard licences`: the licence terms in effect, as a table and as JSON."""

import json

import pytest
from click.testing import CliRunner

from guard.cli import main
from guard.registry.licences import catalogue, lookup

SETTINGS = """\
models:
  - {name: llama, upstream: local, upstream_model: meta/llama-3.1-8b, licence: Llama-3.1}
  - name: llama2-licensed
    upstream: local
    licence: {id: llama2, user_threshold: null, revision: abc123}
  - name: acme
    upstream: local
    licence: {id: acme-model-licence, commercial_use: false, restrictions: [internal only]}
"""


@pytest.fixture
def config(tmp_path, monkeypatch):
    for name in ("GUARD_MODELS", "GUARD_UPSTREAMS"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "guard.yaml"
    path.write_text(SETTINGS)
    return path


def invoke(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def rows(output):
    return [line.split("\t") for line in output.splitlines()]


def test_models_table_has_a_header_and_one_row_per_model(config):
    header, *lines = rows(invoke("models", "--config", str(config)))
    assert header == [
        "MODEL",
        "UPSTREAM",
        "LICENCE",
        "COMMERCIAL",
        "ATTRIBUTION",
        "SHARE-ALIKE",
        "USER THRESHOLD",
        "RESTRICTIONS",
        "UPSTREAM MODEL",
        "LICENCE NAME",
    ]
    assert [line[0] for line in lines] == ["llama", "llama2-licensed", "acme"]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        pytest.param(
            "llama",
            [
                "local",
                "llama3.1",
                "commercial",
                "yes",
                "yes",
                "700,000,000",
                "5",
                "meta/llama-3.1-8b",
                "Llama 3.1 Community License Agreement",
            ],
            id="short-form-from-the-catalogue",
        ),
        pytest.param(
            "llama2-licensed",
            [
                "local",
                "llama2",
                "commercial",
                "yes",
                "yes",
                "-",
                "6",
                "llama2-licensed",
                "Llama 2 Community License Agreement",
            ],
            id="override-separate-agreement",
        ),
        pytest.param(
            "acme",
            [
                "local",
                "acme-model-licence",
                "non-commercial",
                "no",
                "no",
                "-",
                "1",
                "acme",
                "acme-model-licence (not in the catalogue)",
            ],
            id="uncatalogued",
        ),
    ],
)
def test_models_table_shows_the_terms_in_effect(config, model, expected):
    by_model = {line[0]: line[1:] for line in rows(invoke("models", "--config", str(config)))}
    assert by_model[model] == expected


def test_models_json_prints_the_full_terms(config):
    models = {m["name"]: m for m in json.loads(invoke("models", "--config", str(config), "--json"))}
    llama = models["llama"]
    assert (llama["upstream"], llama["upstream_model"]) == ("local", "meta/llama-3.1-8b")
    entry = lookup("llama3.1")
    assert entry is not None
    assert llama["licence"] == {
        "id": "llama3.1",
        "name": "Llama 3.1 Community License Agreement",
        "commercial_use": True,
        "attribution_required": True,
        "share_alike": True,
        "restrictions": list(entry.use_restrictions),
        "user_threshold": 700_000_000,
        "catalogued": True,
        "source_url": None,
        "revision": None,
    }
    overridden = models["llama2-licensed"]["licence"]
    assert (overridden["user_threshold"], overridden["revision"]) == (None, "abc123")
    acme = models["acme"]["licence"]
    assert (acme["catalogued"], acme["name"], acme["restrictions"]) == (
        False,
        "acme-model-licence",
        ["internal only"],
    )


def test_models_refuses_an_uncatalogued_licence_without_its_terms(tmp_path):
    path = tmp_path / "guard.yaml"
    path.write_text("models:\n  - {name: m, upstream: local, licence: acme-model-licence}\n")
    result = CliRunner().invoke(main, ["models", "--config", str(path)])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"guard: invalid settings in {path}: models.0.licence.commercial_use:")
    assert result.stdout == ""


def test_licences_table_lists_the_whole_catalogue():
    header, *lines = rows(invoke("licences"))
    assert header == [
        "ID",
        "COMMERCIAL",
        "ATTRIBUTION",
        "SHARE-ALIKE",
        "USER THRESHOLD",
        "RESTRICTIONS",
        "NAME",
    ]
    assert [line[0] for line in lines] == list(catalogue().ids)


@pytest.mark.parametrize(
    ("licence_id", "expected"),
    [
        pytest.param("apache-2.0", ["commercial", "no", "no", "-"], id="apache"),
        pytest.param("llama2", ["commercial", "yes", "yes", "700,000,000"], id="llama2"),
        pytest.param("qwen", ["commercial", "yes", "no", "100,000,000"], id="qwen"),
        pytest.param("cc-by-nc-sa-4.0", ["non-commercial", "yes", "yes", "-"], id="cc-by-nc-sa"),
        pytest.param("cc0-1.0", ["commercial", "no", "no", "-"], id="cc0"),
    ],
)
def test_licences_table_rows(licence_id, expected):
    by_id = {line[0]: line[1:] for line in rows(invoke("licences"))}
    entry = lookup(licence_id)
    assert entry is not None
    assert by_id[licence_id] == [*expected, str(len(entry.use_restrictions)), entry.name]


def test_licences_json_prints_every_term_of_every_entry():
    entries = json.loads(invoke("licences", "--json"))
    assert [e["id"] for e in entries] == list(catalogue().ids)
    falcon = next(e for e in entries if e["id"] == "falcon-180b-tii-license-1.0")
    assert set(falcon) == {
        "id",
        "name",
        "aliases",
        "url",
        "commercial_use",
        "attribution_required",
        "share_alike",
        "use_restrictions",
        "user_threshold",
        "notes",
    }
    assert any("Hosting Use" in text for text in falcon["use_restrictions"])


def test_models_is_also_the_group_of_pull(config):
    result = CliRunner().invoke(main, ["models", "--help"])
    assert result.exit_code == 0
    assert "pull" in result.stdout.split("Commands:")[1]
    # the list's options belong to the list
    result = CliRunner().invoke(
        main, ["models", "--json", "pull", "detoxify-original", "--to", "x"]
    )
    assert result.exit_code == 2
    assert "--config and --json are for the list, not `pull`" in result.stderr
    # and a name that is no subcommand is refused as before (no stray argument is ignored)
    result = CliRunner().invoke(main, ["models", "--config", str(config), "extra"])
    assert result.exit_code == 2
    assert result.stdout == ""

"""Settings: embedded defaults, YAML, GUARD_* overrides, and one clear error per bad file."""

import itertools
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

import guard
from guard.errors import ConfigError
from guard.settings import Settings, load_settings

EXAMPLE = Path(guard.__file__).parent / "settings.example.yaml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("GUARD_"):
            monkeypatch.delenv(name)


def write(tmp_path, text):
    path = tmp_path / "guard.yaml"
    path.write_text(text)
    return path


def test_embedded_defaults_start_without_a_file():
    settings = load_settings(None)
    assert settings.server.port == 8080
    assert settings.models[0].upstream == settings.upstreams[0].name


def test_yaml_file_and_environment_override(tmp_path, monkeypatch):
    path = write(tmp_path, "server:\n  port: 9001\n  workers: 2\n")
    monkeypatch.setenv("GUARD_SERVER__PORT", "9002")
    settings = load_settings(path)
    assert settings.server.port == 9002  # environment beats the file
    assert settings.server.workers == 2  # the file beats the defaults


def test_environment_lists_as_json(monkeypatch):
    monkeypatch.setenv(
        "GUARD_UPSTREAMS", '[{"name": "u", "base_url": "http://127.0.0.1:1", "kind": "ollama"}]'
    )
    monkeypatch.setenv(
        "GUARD_MODELS",
        '[{"name": "m", "upstream": "u", "licence": {"id": "mit", "commercial_use": true}}]',
    )
    settings = load_settings(None)
    assert settings.upstreams[0].kind == "ollama"
    assert settings.models[0].name == "m"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        pytest.param("server:\n  prot: 1\n", "server.prot", "unknown key", id="unknown-key"),
        pytest.param("sever: {}\n", "sever", "unknown key", id="unknown-top-key"),
        pytest.param("server:\n  port: http\n", "server.port", "integer", id="wrong-type"),
        pytest.param("server:\n  port: 70000\n", "server.port", "65535", id="out-of-range"),
        pytest.param(
            "upstreams:\n  - {name: a, base_url: 'http://x', kind: vllm}\n",
            "upstreams.0.kind",
            "'openai' or 'ollama'",
            id="bad-kind",
        ),
        pytest.param(
            "upstreams:\n  - {name: a, base_url: 'not a url'}\n",
            "upstreams.0.base_url",
            "URL",
            id="bad-url",
        ),
        pytest.param(
            "models:\n  - {name: m, upstream: nowhere, licence: {id: mit, commercial_use: true}}\n",
            "models.0.upstream",
            "no upstream named 'nowhere'",
            id="dangling-upstream",
        ),
        pytest.param(
            "models:\n  - {name: m, upstream: local, licence: {id: mit, commercial_use: true}}\n"
            "  - {name: m, upstream: local, licence: {id: mit, commercial_use: true}}\n",
            "models.1.name",
            "duplicate",
            id="duplicate-model",
        ),
        pytest.param(
            "models:\n  - {name: m, upstream: local, licence: {id: acme-model-licence}}\n",
            "models.0.licence.commercial_use",
            "required",
            id="uncatalogued-licence-incomplete",
        ),
        pytest.param(
            "upstreams:\n  - {name: a, base_url: 'http://x', api_key_env: GUARD_TEST_NO_SUCH}\n"
            "models: []\n",
            "upstreams.0",
            "GUARD_TEST_NO_SUCH is not set",
            id="missing-credential",
        ),
        pytest.param(
            "passthrough:\n  - {path: '/v1/../admin', upstream: local}\n",
            "passthrough.0.path",
            "'..'",
            id="passthrough-escape",
        ),
    ],
)
def test_bad_file_gives_one_message_naming_file_key_and_problem(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert str(path) in message
    assert f": {key}:" in message
    assert problem in message
    assert "\n" not in message


def test_error_never_echoes_values(tmp_path):
    path = write(tmp_path, "server:\n  host: [hunter2-password]\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "hunter2" not in str(err.value)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_settings(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"invalid YAML in .* at line \d+, column \d+"):
        load_settings(write(tmp_path, "server:\n  port: [1\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(write(tmp_path, "- a\n"))


def test_environment_errors_say_so(monkeypatch):
    monkeypatch.setenv("GUARD_SERVER__PORT", "x")
    with pytest.raises(ConfigError, match="GUARD_SERVER"):
        load_settings(None)


def _keys(model: type[BaseModel], prefix=""):
    for name, field in model.model_fields.items():
        yield prefix + name
        inner = field.annotation
        args = getattr(inner, "__args__", ())
        for candidate in (inner, *args):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                yield from _keys(candidate, f"{prefix}{name}.")


def _file_keys(data, prefix=""):
    if isinstance(data, dict):
        for key, value in data.items():
            yield prefix + key
            yield from _file_keys(value, f"{prefix}{key}.")
    elif isinstance(data, list):
        for item in data:
            yield from _file_keys(item, prefix)


def test_example_file_is_valid_and_documents_every_key():
    settings = load_settings(EXAMPLE)
    assert settings == Settings()  # the example shows the defaults
    text = EXAMPLE.read_text()
    documented = set(_file_keys(yaml.safe_load(text)))
    # Keys of lists that are empty by default appear in a commented-out example
    # right under the list.
    for path in ("passthrough", "auth.keys", "tenants"):
        name = path.rsplit(".", 1)[-1]
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{name}: []"))
        after = text.split(line + "\n", 1)[1].splitlines()
        block = itertools.takewhile(lambda ln: ln.lstrip().startswith("#  "), after)
        commented = yaml.safe_load("\n".join(ln.replace("#", " ", 1) for ln in block))
        assert commented, f"no commented example under {path}"
        documented |= {f"{path}.{key}" for item in commented for key in _file_keys(item)}
    missing = set(_keys(Settings)) - documented
    assert not missing, f"keys missing from {EXAMPLE.name}: {sorted(missing)}"

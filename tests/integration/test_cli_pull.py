"""`guard models pull`: what it says and leaves behind when the network does not deliver
(this suite runs with no internet: a dead proxy makes that so everywhere), usage
errors, and the model directory it makes of Detoxify's files, loaded by guard's own
loader."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from guard.cli import main
from guard.cli.pull import KINDS, PullFailed, _download, _move_into, _reason, fit_detoxify
from guard.detectors.toxicity.backends import load_classifier
from guard.detectors.toxicity.config import ToxicityOptions
from tests.fakes.classifiers import detoxify_checkpoint

QUICK = {"HF_HUB_ETAG_TIMEOUT": "3", "HF_HUB_DOWNLOAD_TIMEOUT": "3"}
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
TAIL = "— run this on a machine with internet, then copy {dir} to this one"


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_proxy():
    """Every request through a proxy that refuses connections: no network, anywhere."""
    url = f"http://127.0.0.1:{closed_port()}"
    env = {name: url for name in PROXY_VARS} | {name.lower(): url for name in PROXY_VARS}
    return env | {"NO_PROXY": "", "no_proxy": ""}


def pull_cli(*args, env=None, cwd=None):
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "guard", "models", "pull", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, **QUICK, **(env or {})},
    )
    return done, time.monotonic() - started


def assert_download_failed(done, elapsed, kind, target):
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"guard: could not download {kind}: "), line
    assert line.endswith(TAIL.format(dir=target)), line
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert elapsed < 20
    return line.removeprefix(f"guard: could not download {kind}: ").split(" — ")[0]


@pytest.mark.parametrize("kind", ["detoxify-original", "hf:unitary/toxic-bert@main"])
def test_pull_without_network_fails_in_one_line_and_leaves_nothing(tmp_path, kind):
    target = tmp_path / "models" / "tox"
    done, elapsed = pull_cli(kind, "--to", str(target), env=dead_proxy())
    reason = assert_download_failed(done, elapsed, kind, target)
    assert reason.split(":")[0].endswith(("Error", "failed")), reason  # its type, then why
    assert os.listdir(tmp_path / "models") == []  # no DIR, no staging directory


def test_pull_with_this_machines_own_lack_of_internet(tmp_path):
    from detoxify.detoxify import MODEL_URLS
    from huggingface_hub import constants

    for url in (MODEL_URLS["original"], constants.ENDPOINT):
        host = urllib.parse.urlparse(url).hostname
        try:
            socket.getaddrinfo(host, 443)
        except OSError:
            continue
        pytest.skip(f"{host} resolves here: this test is for a machine without internet")
    target = tmp_path / "tox"
    done, elapsed = pull_cli("detoxify-original", "--to", str(target))
    assert_download_failed(done, elapsed, "detoxify-original", target)
    assert not target.exists()


def test_pull_in_offline_mode_does_not_try(tmp_path):
    done, elapsed = pull_cli(
        "hf:unitary/toxic-bert", "--to", "tox", env={"HF_HUB_OFFLINE": "1"}, cwd=tmp_path
    )
    reason = assert_download_failed(done, elapsed, "hf:unitary/toxic-bert", "tox")
    assert reason == "offline mode: HF_HUB_OFFLINE is set"


@pytest.mark.parametrize("kind", ["detoxify", "original", "hf:", "hf:toxic-bert", "hf:a/b@"])
def test_an_unknown_kind_is_a_usage_error_that_lists_the_kinds(tmp_path, kind):
    result = CliRunner().invoke(main, ["models", "pull", kind, "--to", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert f"unknown kind {kind!r}" in result.stderr
    for known in KINDS:
        assert known in result.stderr
    assert not (tmp_path / "m").exists()


def test_a_non_empty_directory_needs_force(tmp_path):
    target = tmp_path / "tox"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["models", "pull", "detoxify-original", "--to", str(target)])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line == f"guard: {target} is not empty; pass --force to write the pulled files into it"
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("kind", "module"),
    [("hf:unitary/toxic-bert", "huggingface_hub"), ("detoxify-unbiased", "detoxify")],
)
def test_a_missing_library_names_the_extra(tmp_path, monkeypatch, kind, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    result = CliRunner().invoke(main, ["models", "pull", kind, "--to", str(tmp_path / "m")])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"guard: models pull {kind} needs ")
    assert "pip install 'guard[toxicity]'" in line


# -- what a pull leaves, and how it fails, piece by piece ---------------------------------


def base_config_only(directory):
    """Make a Detoxify directory look as the hub's files leave it: the base model's
    config.json, which knows nothing of the checkpoint's labels."""
    config = json.loads((directory / "config.json").read_text())
    for key in ("id2label", "label2id", "problem_type", "architectures"):
        config.pop(key, None)
    (directory / "config.json").write_text(json.dumps(config))


def test_the_pulled_detoxify_directory_loads_with_its_labels_and_licence(tmp_path):
    directory = detoxify_checkpoint(tmp_path / "tox", seed=4)
    base_config_only(directory)
    options = ToxicityOptions(backend="detoxify", model=str(directory), device="cpu")
    with pytest.raises(RuntimeError):  # the base config alone does not fit the checkpoint
        load_classifier(options, 4)
    fit_detoxify(
        directory,
        "detoxify-original",
        directory / "toxic_tiny-00000000.ckpt",
        source="a checkpoint built by this test",
        base="google-bert/bert-base-uncased@abc",
        base_licence="apache-2.0",
    )
    classifier = load_classifier(options, 4)
    assert classifier.labels == (
        "toxicity",
        "severe_toxicity",
        "obscene",
        "threat",
        "insult",
        "identity_attack",
    )
    assert classifier.info.licence == "apache-2.0"
    [row] = classifier.score(["you are a stupid idiot"])
    assert len(row) == 6 and all(0 <= s <= 1 for s in row)
    card = (directory / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n---\n")
    assert "toxic_tiny-00000000.ckpt, from a checkpoint built by this test" in card
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["problem_type"] == "multi_label_classification"


def test_a_checkpoint_of_another_base_model_is_refused(tmp_path):
    directory = detoxify_checkpoint(tmp_path / "tox")
    with pytest.raises(
        PullFailed, match="names base model 'bert-base-uncased', not 'roberta-base'"
    ):
        fit_detoxify(
            directory,
            "detoxify-unbiased",
            directory / "toxic_tiny-00000000.ckpt",
            source="s",
            base="b",
        )


def test_a_forced_pull_replaces_the_former_weights_and_keeps_other_files(tmp_path):
    staging, target = tmp_path / "staging", tmp_path / "tox"
    staging.mkdir()
    target.mkdir()
    (staging / "new-1.ckpt").write_bytes(b"new")
    (staging / "config.json").write_text("{}")
    (target / "old-0.ckpt").write_bytes(b"old")
    (target / "config.json").write_text('{"old": true}')
    (target / "notes.txt").write_text("mine")
    written, removed = _move_into(staging, target)
    assert [str(p) for p in written] == ["config.json", "new-1.ckpt"]
    assert [str(p) for p in removed] == ["old-0.ckpt"]
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "new-1.ckpt", "notes.txt"]
    assert (target / "config.json").read_text() == "{}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/missing.ckpt":
            self.send_error(404)
        elif self.path == "/short.ckpt":  # promises more than it sends
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
        elif self.path == "/silent.ckpt":  # answers nothing
            time.sleep(3)
        else:
            body = b"checkpoint"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_checkpoint_download_streams_and_hashes(server, tmp_path):
    digest = _download(f"{server}/good.ckpt", tmp_path / "good.ckpt")
    assert (tmp_path / "good.ckpt").read_bytes() == b"checkpoint"
    assert digest == hashlib.sha256(b"checkpoint").hexdigest()
    assert not (tmp_path / "good.ckpt.part").exists()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing.ckpt", "HTTPError: HTTP Error 404: Not Found"),
        ("short.ckpt", "IncompleteRead: IncompleteRead(0 bytes read, 90 more expected)"),
        ("silent.ckpt", "TimeoutError: timed out"),
    ],
)
def test_a_failed_checkpoint_download_says_why_and_leaves_no_file(server, tmp_path, name, reason):
    started = time.monotonic()
    with pytest.raises(Exception) as caught:  # noqa: PT011  # what kind is what is tested
        _download(f"{server}/{name}", tmp_path / name)
    assert _reason(caught.value) == reason
    assert time.monotonic() - started < 2.5
    assert not (tmp_path / name).exists()
    assert not (tmp_path / f"{name}.part").exists()

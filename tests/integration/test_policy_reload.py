# ruff: noqa: E501  (the table's cases read better one a line)
"""Hot reload: a changed bundle is checked, tested and swapped in whole; a bad one is
turned away; exchanges keep the version they started with; the audit trail keeps
every version's files."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from guard.db import models
from guard.policy.loader import read_source
from tests.conftest import make_settings
from tests.fakes.audit import wait_until
from tests.fakes.policies import write_bundle
from tests.integration.test_audit_events import recorded

TOKEN = "reload-test-token"  # noqa: S105  # a test credential
AUTH = {"authorization": f"Bearer {TOKEN}"}
WORDS = """
    name: words
    description: the code name of a project stays in house
    scope: {{direction: {direction}}}
    detectors:
      patterns:
        keywords:
          - name: CODENAME
            phrases: [bluebird]
    rules:
      - id: words.codename
        when: {{patterns.any: [CODENAME]}}
        action: {action}
    tests:
      - name: the code name is caught
        direction: {direction}
        text: the bluebird project
        expect: {{action: {action}, rules: [words.codename]}}
"""


def words(action: str = "flag", direction: str = "input") -> dict[str, str]:
    return {"words.yaml": WORDS.format(action=action, direction=direction)}


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "policies", words("flag"))


@pytest.fixture
def reloading(guard_at, upstream, bundle_dir, monkeypatch):
    monkeypatch.setenv("GUARD_ADMIN_TOKEN", TOKEN)

    def start(**policy):
        settings = make_settings(
            upstream.base_url, policy={"dir": str(bundle_dir), "watch_debounce": 0.05, **policy}
        )
        return guard_at(settings)

    return start


def chat(server, content, **extra):
    body = {"model": "m1", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10)


def status(server):
    return httpx.get(f"{server.url}/admin/policies", headers=AUTH).json()


def exchanges(server):
    recorder = server.app.state.recorder
    assert recorder.flush()
    table = models.events
    stmt = table.select().order_by(table.c.started_at, table.c.id)
    return [e for e in recorder.repo.events(stmt)]


def test_a_changed_file_is_put_in_force_without_a_restart(reloading, bundle_dir):
    server = reloading()
    v1 = status(server)["version"]
    assert v1 == read_source(bundle_dir).version
    assert chat(server, "news on bluebird?").status_code == 200
    write_bundle(bundle_dir, words("block"))
    v2 = read_source(bundle_dir).version
    assert wait_until(lambda: status(server)["version"] == v2)
    blocked = chat(server, "news on bluebird?")
    assert blocked.status_code == 403
    assert blocked.json()["error"]["code"] == "content_policy_violation"
    state = status(server)
    assert state["last_attempt"]["outcome"] == "loaded"
    assert state["last_attempt"]["reason"] == "watch"
    assert state["policies"][0]["rules"] == ["words.codename"]
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["policy"]["version"] == v2 and ready["detectors"] == ["patterns"]
    events = exchanges(server)
    seen = [(e.kind, e.decision, e.policy_version) for e in events]
    assert seen == [
        ("policy", "loaded", v1),
        ("exchange", "flag", v1),
        ("policy", "loaded", v2),
        ("exchange", "block", v2),
    ]
    assert events[0].detail["previous"] is None  # the first bundle of this process
    assert events[2].route == "watch" and events[2].detail["previous"] == v1
    assert events[2].detail["files"] == {"words.yaml": (bundle_dir / "words.yaml").read_text()}


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        pytest.param({"words.yaml": "name: words\nrules: [\n"}, "words.yaml:3:1: invalid YAML", id="yaml"),
        pytest.param(
            {"extra.yaml": "name: extra\ndetectors: {patterns: {}}\nrules:\n"
             "  - {id: e, action: flag, when: {patterns.any: [NOPE]}}\n"},
            "extra.yaml:4:48: rule e: when.patterns.any: detector 'patterns' never reports 'NOPE'",
            id="condition",
        ),
        pytest.param(
            {"words.yaml": WORDS.format(action="flag", direction="input").replace(
                "expect: {action: flag", "expect: {action: block"
            )},
            "test 'the code name is caught': action: expected block, got flag",
            id="own-test-fails",
        ),
    ],
)  # fmt: skip
def test_a_bundle_that_fails_its_checks_or_tests_is_turned_away(
    reloading, bundle_dir, files, problem
):
    server = reloading()
    v1 = status(server)["version"]
    write_bundle(bundle_dir, files)
    assert wait_until(lambda: status(server)["rejected"] == 1)
    state = status(server)
    assert state["version"] == v1
    attempt = state["last_attempt"]
    assert attempt["outcome"] == "rejected" and attempt["version"] is None
    assert any(problem in p for p in attempt["problems"]), attempt["problems"]
    assert chat(server, "bluebird").status_code == 200  # still decided by the running bundle
    rejected = [e for e in exchanges(server) if e.kind == "policy" and e.decision == "rejected"]
    assert len(rejected) == 1
    assert rejected[0].policy_version == v1 and rejected[0].detail["kept"] == v1


def test_admin_reload(reloading, bundle_dir, guard_at):
    server = reloading(watch=False)
    url = f"{server.url}/admin/policies/reload"
    v1 = status(server)["version"]
    assert status(server)["watching"] is False
    write_bundle(bundle_dir, words("block"))
    assert status(server)["version"] == v1  # no watcher: nothing happens by itself
    assert httpx.post(url).status_code == 401
    r = httpx.post(url, headers=AUTH)
    assert r.status_code == 200
    assert r.json()["outcome"] == "loaded" and r.json()["version"] != v1
    assert chat(server, "bluebird").status_code == 403
    again = httpx.post(url, headers=AUTH)
    assert (again.status_code, again.json()["outcome"]) == (200, "unchanged")
    (bundle_dir / "words.yaml").write_text("name: words\nrules: []\n")
    bad = httpx.post(url, headers=AUTH)
    assert bad.status_code == 422
    assert bad.json()["problems"] == [
        "words.yaml:2:8: rules: List should have at least 1 item after validation, not 0"
    ]
    assert chat(server, "bluebird").status_code == 403


def test_a_fixed_engine_has_nothing_to_reload(guard_at, monkeypatch):
    from guard.policy.engine import AllowAll

    monkeypatch.setenv("GUARD_ADMIN_TOKEN", TOKEN)
    server = guard_at(policy=AllowAll())
    r = httpx.post(f"{server.url}/admin/policies/reload", headers=AUTH)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "fixed_policy"


def test_an_exchange_in_flight_finishes_under_the_version_it_started_with(
    reloading, bundle_dir, upstream
):
    server = reloading()
    write_bundle(bundle_dir, words("flag", "output"))
    v1 = read_source(bundle_dir).version
    assert wait_until(lambda: status(server)["version"] == v1)
    upstream.behaviour.reply_text = "the bluebird flies. again and again. and again."
    upstream.behaviour.chunk_delay = 0.05
    result: dict[str, httpx.Response] = {}
    started = threading.Event()

    def stream():
        with httpx.stream(
            "POST",
            f"{server.url}/v1/chat/completions",
            json={"model": "m1", "stream": True, "messages": [{"role": "user", "content": "go"}]},
            timeout=10,
        ) as r:
            started.set()
            r.read()
            result["r"] = r

    worker = threading.Thread(target=stream)
    worker.start()
    assert started.wait(5)
    write_bundle(bundle_dir, words("block", "output"))
    v2 = read_source(bundle_dir).version
    assert wait_until(lambda: status(server)["version"] == v2)
    worker.join(10)
    old = result["r"].text
    assert "content_filter" not in old and "bluebird" in old  # decided under v1: flagged
    upstream.behaviour.chunk_delay = 0.0
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        json={"model": "m1", "stream": True, "messages": [{"role": "user", "content": "go"}]},
    ) as r:
        new = r.read().decode()
    assert "content_filter" in new and "bluebird" not in new  # decided under v2
    done = recorded(server, 2)  # the second stream is recorded a moment after its end is read
    assert [(e.policy_version, e.decision) for e in done] == [(v1, "flag"), (v2, "block")]


def test_audit_show_prints_the_policy_that_decided(reloading, bundle_dir, audit_home, tmp_path):
    server = reloading()
    assert chat(server, "bluebird").status_code == 200
    [event] = [e for e in exchanges(server) if e.kind == "exchange"]
    version = event.policy_version
    r = httpx.get(f"{server.url}/admin/policies/versions/{version}", headers=AUTH)
    assert r.status_code == 200
    assert r.json()["files"] == {"words.yaml": (bundle_dir / "words.yaml").read_text()}
    missing = httpx.get(f"{server.url}/admin/policies/versions/sha256:0000", headers=AUTH)
    assert missing.status_code == 404
    config = tmp_path / "guard.yaml"
    url = f"sqlite:///{audit_home / 'audit.sqlite3'}"
    config.write_text(yaml.safe_dump({"audit": {"database_url": url}}))
    shown = subprocess.run(
        [sys.executable, "-m", "guard", "audit", "show", "--config", str(config), event.id],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "input words.codename: flag" in shown.stdout
    assert f"policy bundle {version} (first in force" in shown.stdout
    assert "--- words.yaml\n  name: words\n" in shown.stdout
    assert "      - name: CODENAME" in shown.stdout


def test_a_bundle_failing_its_own_tests_stops_the_start(guard_at, upstream, bundle_dir, caplog):
    failing = WORDS.format(action="flag", direction="input").replace(
        "expect: {action: flag", "expect: {action: block"
    )
    write_bundle(bundle_dir, {"words.yaml": failing})
    with pytest.raises(RuntimeError, match="did not start"):
        guard_at(make_settings(upstream.base_url, policy={"dir": str(bundle_dir)}))
    assert (
        "policy: words.yaml: test 'the code name is caught': action: expected block, got flag"
        in caplog.text
    )


def test_a_configmap_style_symlink_swap_is_picked_up(reloading, tmp_path):
    """Kubernetes mounts a ConfigMap as `name -> ..data/name`, `..data -> ..<timestamp>`,
    and updates it by swapping the `..data` symlink."""
    root = tmp_path / "configmap"
    write_bundle(root / "..v1", words("flag"))
    (root / "..data").symlink_to("..v1")
    (root / "words.yaml").symlink_to("..data/words.yaml")
    server = reloading(dir=str(root))
    assert chat(server, "bluebird").status_code == 200
    write_bundle(root / "..v2", words("block"))
    (root / "..data_tmp").symlink_to("..v2")
    (root / "..data_tmp").replace(root / "..data")
    assert wait_until(lambda: chat(server, "bluebird").status_code == 403)
    assert status(server)["version"] == read_source(root).version
    assert [p["file"] for p in status(server)["policies"]] == ["words.yaml"]

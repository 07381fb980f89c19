"""The guard command: serve on a real port, refuse bad settings with one clear line."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from tests.fakes.guard_server import free_port

GUARD = [sys.executable, "-m", "guard"]


def run(*args, env=None, cwd=None):
    return subprocess.run(
        [*GUARD, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
        cwd=cwd,
    )


def test_serve_refuses_a_bad_file_with_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: 8080\n  wokers: 2\n")
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"guard: invalid settings in {path}: server.wokers: unknown key"]


def test_config_check_and_models_print_effective_settings(tmp_path):
    result = run("config", "check", env={"GUARD_SERVER__PORT": "9123"})
    assert result.returncode == 0, result.stderr
    assert "port: 9123" in result.stdout
    models = run("models")
    assert "qwen2.5-0.5b-instruct\tlocal\tapache-2.0\tcommercial" in models.stdout


def test_serve_refuses_an_unmigrated_audit_database(tmp_path):
    result = run("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert "run `guard db upgrade`" in result.stderr
    assert result.stderr.count("\n") == 1


def test_serve_starts_on_embedded_defaults_and_stops_cleanly(upstream, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "GUARD_UPSTREAMS": f'[{{"name": "local", "base_url": "{upstream.base_url}"}}]',
    }
    assert run("db", "upgrade", cwd=tmp_path).returncode == 0
    proc = subprocess.Popen(
        [*GUARD, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        # Presidio and the built-in classifier load at start: seconds, more on a busy host.
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "guard serve did not start"
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "qwen2.5-0.5b-instruct",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert r.status_code == 200
        assert upstream.requests[-1].json()["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
        assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in {0, -signal.SIGTERM}, output
    assert "Application shutdown complete" in output
    assert "hi" not in output.replace("Shutting", "").replace("Finished", "")
    # The exchange was recorded before the process ended.
    listed = run("audit", "list", "--format", "jsonl", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    events = [json.loads(line) for line in listed.stdout.splitlines()]
    [event] = [e for e in events if e["kind"] == "exchange"]
    assert (event["model"], event["status"]) == ("qwen2.5-0.5b-instruct", 200)
    [loaded] = [e for e in events if e["kind"] == "policy"]
    assert (loaded["decision"], loaded["route"]) == ("loaded", "start")
    assert loaded["policy_version"] == event["policy_version"]
    assert run("audit", "verify", cwd=tmp_path).returncode == 0


def test_an_unreachable_audit_database_stops_the_start_without_its_password(tmp_path):
    url = f"postgresql+psycopg://guard:s3cret-pw@127.0.0.1:{free_port()}/audit"
    result = run("serve", env={"GUARD_AUDIT__DATABASE_URL": url}, cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot reach the audit database" in result.stderr
    assert "s3cret-pw" not in result.stderr
    assert result.stderr.count("\n") == 1

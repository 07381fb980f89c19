"""Request and response content never reaches guard's logs, whatever goes wrong."""

import logging

import httpx

from guard.detectors.runner import ScanResult
from tests.conftest import make_settings
from tests.fakes.detectors import marker_registry
from tests.fakes.policies import needing

MARK = "PII-MARKER-4242"


class ExplodingPolicy:
    version = "test:exploding"

    def decide(self, scan: ScanResult, ctx):
        raise ValueError(f"choked on {MARK}")


def test_no_request_or_response_content_in_logs(guard_at, upstream, caplog, capfd, tmp_path):
    caplog.set_level(logging.DEBUG)
    registry, _ = marker_registry()
    plain = guard_at()
    policy = needing(tmp_path / "policies", "broken")
    broken = guard_at(make_settings(upstream.base_url, policy=policy), registry=registry)
    exploding = guard_at(policy=ExplodingPolicy())
    body = {"model": "m1", "messages": [{"role": "user", "content": MARK}]}

    assert httpx.post(f"{plain.url}/v1/chat/completions", json=body).status_code == 200
    assert (
        httpx.post(
            f"{plain.url}/v1/chat/completions", content=f'{{"model": "m1", "{MARK}'.encode()
        ).status_code
        == 400
    )
    assert (
        httpx.post(f"{plain.url}/v1/chat/completions", json={**body, "model": MARK}).status_code
        == 404
    )
    assert httpx.post(f"{broken.url}/v1/chat/completions", json=body).status_code == 503
    r = httpx.post(f"{exploding.url}/v1/chat/completions", json=body)
    assert r.status_code == 500
    assert MARK not in r.text
    upstream.behaviour.status = 500
    upstream.behaviour.error_body = {"error": {"message": MARK}}
    assert httpx.post(f"{plain.url}/v1/chat/completions", json=body).status_code == 500
    upstream.behaviour.status = None
    upstream.behaviour.reset = True
    assert httpx.post(f"{plain.url}/v1/chat/completions", json=body).status_code == 502

    assert "ValueError" in caplog.text  # the unexpected error was logged, by type
    assert "RuntimeError" in caplog.text  # and so was the broken detector
    out, err = capfd.readouterr()
    assert MARK not in caplog.text
    assert MARK not in out + err

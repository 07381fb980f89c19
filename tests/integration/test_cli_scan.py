"""`guard scan`: the real command on the bundled policies, with no model server.

Each run starts a process that imports the PII detector (about 2 s), so every test
checks several things of one run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from guard.policy.loader import BUNDLED, read_source
from tests.fakes.policies import write_bundle

EMAIL = "maria@example.com"
CARD_IN = "4111 1111 1111 1111"
CARD_OUT = "5500 0000 0000 0004"


def scan(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `guard scan ARGS` (bytes in: stdin may be any)."""
    done = subprocess.run(
        [sys.executable, "-m", "guard", "scan", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.parametrize(
    ("args", "status", "raw", "expected"),
    [
        pytest.param(
            [f"Mail {EMAIL} today"],
            0,
            EMAIL,
            [
                "decision: redact",
                "rules: pii.redact-input",
                "finding: EMAIL_ADDRESS\tscore 1.00\tspan 5-22 (17 chars)\tpii",
                "text:",
                "Mail <EMAIL_ADDRESS> today",
            ],
            id="email-replaced",
        ),
        pytest.param(
            [f"My card is {CARD_IN}, why was it declined?"],
            1,
            CARD_IN,
            [
                "decision: block (status 400)",
                "rules: pii.block-input",
                "finding: CREDIT_CARD\tscore 1.00\tspan 11-30 (19 chars)\tpii",
                "text: blocked",
            ],
            id="card-blocks-input",
        ),
        pytest.param(
            ["--direction", "output", f"The card on file is {CARD_OUT}."],
            0,
            CARD_OUT,
            [
                "decision: redact",
                "rules: pii.redact-output",
                "text:",
                "The card on file is ***************0004.",
            ],
            id="card-masked-output",
        ),
    ],
)
def test_prints_decision_findings_and_text_never_the_value(
    args: list[str], status: int, raw: str, expected: list[str]
) -> None:
    code, out, err = scan(*args)
    assert code == status, err
    lines = out.splitlines()
    assert lines[0] == f"bundle: {read_source(BUNDLED).version}"
    for line in expected:
        assert line in lines
    assert raw not in out
    assert raw not in err


def test_json_from_stdin() -> None:
    code, out, err = scan("--json", "-", stdin=f"Mail {EMAIL}\n".encode())
    assert code == 0, err
    report = json.loads(out)
    assert report == {
        "bundle": read_source(BUNDLED).version,
        "direction": "input",
        "decision": {
            "action": "redact",
            "rules": ["pii.redact-input"],
            "status": None,
            "message": None,
        },
        "findings": [
            {"detector": "pii", "label": "EMAIL_ADDRESS", "score": 1.0, "start": 5, "end": 22}
        ],
        "redacted": ["Mail <EMAIL_ADDRESS>\n"],
        "degraded": False,
    }
    assert EMAIL not in out


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        pytest.param(
            ["-"], b"caf\xe9 \xff", "guard: stdin is not valid UTF-8 (at byte 3)", id="stdin"
        ),
        pytest.param(
            ["--model", "nope", "hello"],
            b"",
            "guard: --model: no configured model named 'nope'",
            id="unknown-model",
        ),
    ],
)
def test_usage_errors_exit_2(args: list[str], stdin: bytes, message: str) -> None:
    code, out, err = scan(*args, stdin=stdin)
    assert code == 2
    assert message in err
    assert out == ""


def test_a_broken_bundle_exits_2_naming_the_file(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "p", {"x.yaml": "name: x\nrules:\n  - {id: r, action: nope}\n"})
    config = tmp_path / "guard.yaml"
    config.write_text(yaml.safe_dump({"policy": {"dir": str(root)}}))
    code, out, err = scan("--config", str(config), "hello")
    assert code == 2
    assert "guard: x.yaml:3:21: rules.0.action:" in err
    assert out == ""

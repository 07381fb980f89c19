"""Policy files: every problem names its file, line and rule; `guard policy
schema | check | test` on real bundles, the bundled one included."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from guard.policy.loader import BUNDLED, PolicyError, read_source
from tests.fakes.detectors import marker_registry
from tests.fakes.policies import load_bundle, write_bundle

GOOD = """
    name: good
    detectors: {marker: {}}
    rules:
      - id: good.block
        when: {marker.BANNED: true}
        action: block
    tests:
      - name: banned words are blocked
        text: this is forbidden
        expect: {action: block, rules: [good.block]}
"""


def problems_of(tmp_path: Path, files: dict[str, str]) -> list[str]:
    registry, _ = marker_registry()
    with pytest.raises(PolicyError) as info:
        load_bundle(write_bundle(tmp_path / "p", files), registry)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "name: x\nrules:\n  - id: r1\n    action: blok\n",
            "x.yaml:4:13: rules.0.action: Input should be 'allow', 'flag', 'redact' or 'block'",
            id="bad-action",
        ),
        pytest.param(
            "name: x\nrules:\n  - id: r1\n    action: flag\n    colour: red\n",
            "x.yaml:5:13: rules.0.colour: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            "name: x\ndetectors: {marker: {}}\nrules:\n  - id: r1\n    action: flag\n"
            "    when:\n      all:\n        - marker.any: '*'\n        - tenant.tier: {above: 3}\n",
            "x.yaml:9:32: rule r1: when.all.1.tenant.tier.above: unknown operator 'above'",
            id="condition-position",
        ),
        pytest.param(
            "name: x\nrules:\n  - id: r1\n    action: flag\n    when: {expr: 'tenant.tier =='}\n",
            "x.yaml:5:18: rule r1: when.expr: invalid CEL: tenant.tier == (at column 13 of the",
            id="cel",
        ),
        pytest.param(
            "name: x\ndetectors: {nosuch: {}}\nrules:\n  - {id: r1, action: flag}\n",
            "x.yaml:2:21: detectors.nosuch: unknown detector 'nosuch'",
            id="unknown-detector",
        ),
        pytest.param(
            "name: x\nrules:\n  - {id: r1, action: flag, when: {marker.any: '*'}}\n",
            "rule r1: when.marker.any: detector 'marker' is not declared",
            id="undeclared-detector",
        ),
        pytest.param(
            "name: x\nrules:\n  - {id: r1, action: redact}\n",
            "x.yaml:3:5: rules.0: action redact needs `redact`",
            id="redact-needs-methods",
        ),
        pytest.param(
            "name: x\nrules:\n  - {id: r1, action: flag, status: 451}\n",
            "rules.0: `status` and `message` are only for action block",
            id="status-only-for-block",
        ),
        pytest.param(
            "name: x\nrules: [\n", "x.yaml:3:1: invalid YAML: expected the node content", id="yaml"
        ),
        pytest.param(
            "- just a list\n", "x.yaml:1:1: a policy file holds one mapping", id="not-map"
        ),
    ],
)
def test_problems_name_file_line_and_rule(tmp_path: Path, text: str, expected: str) -> None:
    found = problems_of(tmp_path, {"x.yaml": text})
    assert any(expected in problem for problem in found), found


def test_duplicates_across_files(tmp_path: Path) -> None:
    other = GOOD.replace("name: good", "name: other")
    found = problems_of(tmp_path, {"a.yaml": GOOD, "b.yaml": other, "c.yaml": GOOD})
    assert any(
        "b.yaml:4:9:" in p and "duplicate rule id 'good.block' (first in a.yaml)" in p
        for p in found
    )
    assert any(
        p.startswith("c.yaml:1:7: name: policy name 'good' is already used in a.yaml")
        for p in found
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path,
        {
            "a.yaml": "name: a\nrules: []\n",
            "b.yaml": "name: b\nrules:\n  - {id: r, action: nope}\n",
        },
    )
    assert [p.split(":")[0] for p in found] == ["a.yaml", "b.yaml"]


def test_version_is_a_hash_of_names_and_contents(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "p", {"a.yaml": GOOD})
    first = read_source(root).version
    (root / "a.yaml").touch()
    (root / ".a.yaml.swp").write_text("editor junk")
    (root / "notes.txt").write_text("not a policy")
    assert read_source(root).version == first
    (root / "a.yaml").write_text(GOOD + "\n# a comment\n")
    assert read_source(root).version != first
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 16


def guard_cmd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_policy_schema_validates_the_bundled_policies() -> None:
    out = guard_cmd("policy", "schema")
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    files = sorted(BUNDLED.glob("*.yaml"))
    assert {f.name for f in files} >= {"secrets.yaml", "licence.yaml"}
    for path in files:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path.name, [e.message for e in errors])
    bad = yaml.safe_load("name: x\nrules:\n  - {id: r, action: flag, when: {pii.any: 3}}\n")
    assert list(validator.iter_errors(bad))


def test_check_prints_the_version_or_every_problem(tmp_path: Path) -> None:
    out = guard_cmd("policy", "check")
    assert out.returncode == 0, out.stderr
    assert f"bundle {read_source(BUNDLED).version}:" in out.stdout
    assert "secrets.yaml\tsecrets\tenforce" in out.stdout
    broken = write_bundle(
        tmp_path / "p", {"x.yaml": "name: x\nrules:\n  - {id: r, action: nope}\n"}
    )
    out = guard_cmd("policy", "check", str(broken))
    assert out.returncode == 1
    assert "guard: x.yaml:3:21: rules.0.action:" in out.stderr


def test_test_runs_the_cases_and_fails_on_any_failure(tmp_path: Path) -> None:
    out = guard_cmd("policy", "test")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS  secrets: an AWS access key in a prompt is blocked" in out.stdout
    assert "FAIL" not in out.stdout
    root = tmp_path / "p"
    shutil.copytree(BUNDLED, root)
    policy = (root / "secrets.yaml").read_text()
    (root / "secrets.yaml").write_text(
        policy.replace("expect: {action: allow, rules: []}", "expect: {action: block}", 1)
    )
    out = guard_cmd("policy", "test", str(root), "--json")
    assert out.returncode == 1
    cases = [json.loads(line) for line in out.stdout.splitlines()]
    failed = [c for c in cases if not c["passed"]]
    assert [c["case"] for c in failed] == ["talk about keys without a key passes"]
    assert failed[0]["failures"] == ["action: expected block, got allow"]
    assert "1 failed" in out.stderr


def test_serve_refuses_a_bundle_that_fails_its_checks(tmp_path: Path) -> None:
    broken = write_bundle(
        tmp_path / "p", {"x.yaml": "name: x\nrules:\n  - {id: r, action: nope}\n"}
    )
    config = tmp_path / "guard.yaml"
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    config.write_text(
        yaml.safe_dump(
            {"policy": {"dir": str(broken)}, "audit": {"database_url": url, "auto_migrate": True}}
        )
    )
    out = guard_cmd("serve", "--config", str(config), "--port", "0")
    assert out.returncode == 2
    assert "guard: x.yaml:3:21: rules.0.action:" in out.stderr

# ruff: noqa: E501  (tables read better one case a line)
"""The patterns detector: each secret label, policy regexes and keywords, look-alikes,
config errors, and the worker-thread path for large texts.

Fake secrets are assembled at test time (a prefix plus filler from ``token``), so no
credential-shaped string sits in the repository for secret scanners to trip on.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from guard.detectors import Direction
from guard.detectors.patterns import (
    ENTRY,
    INLINE_LIMIT,
    PatternsConfig,
    PatternsDetector,
    build,
    labels,
)
from guard.detectors.registry import DetectorRegistry
from guard.detectors.secrets import SECRET_LABELS
from guard.errors import ConfigError
from tests.fakes.policies import context


def token(n: int, seed: str = "") -> str:
    """n letters and digits, mixed case, that look random; the same every run."""
    out, counter = "", 0
    while len(out) < n:
        digest = hashlib.sha512(f"{seed}/{counter}".encode()).digest()
        out += base64.b64encode(digest).decode().translate(str.maketrans("", "", "+/="))
        counter += 1
    return out[:n]


def hexdigest(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()  # noqa: S324  # a commit-hash look-alike


def pem(kind: str, body_lines: int = 3, end: bool = True) -> str:
    label = f"{kind} PRIVATE KEY".strip() + (" BLOCK" if kind == "PGP" else "")
    lines = ["-----BEGIN " + label + "-----"]
    lines += [token(64, f"pem{i}") for i in range(body_lines)]
    if end:
        lines.append("-----END " + label + "-----")
    return "\n".join(lines)


def wide(text: str) -> str:
    """The full-width form of ASCII text, as East Asian keyboards type it."""
    return "".join(
        "\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text
    )


def detector(**config: Any) -> PatternsDetector:
    return build({}, [PatternsConfig.model_validate(config)])


SECRETS = detector(secrets=True)
POLICY = detector(
    regexes=[
        {"name": "EMPLOYEE_ID", "pattern": r"EMP-\d{6}"},
        {"name": "TICKET", "pattern": r"tick-\d+", "ignore_case": True, "score": 0.5},
    ],
    keywords=[
        {"name": "PROJECT_CODENAME", "phrases": ["Blue Falcon", "nightjar"]},
        {"name": "TEAM", "phrases": ["finance", "Straße", "café", "C++"]},
        {"name": "CLASSIFIED", "phrases": ["机密", "회사"]},
    ],
)

AWS_ID = "AKIA" + "Z2" * 8
SLACK_PATH = "services/T" + "0" * 8 + "/B" + "0" * 8 + "/" + token(24, "slack")
JWT = "eyJ" + token(20, "h") + ".eyJ" + token(40, "p") + "." + token(43, "s")


def found(det: PatternsDetector, *texts: str) -> list[tuple[int, str, tuple[int, int] | None]]:
    return [(f.text_index, f.label, f.span) for f in det.scan(texts)]


# (text before, the secret, text after, label): the span must be the secret exactly,
# and it must be the only finding.
SECRET_CASES = [
    pytest.param("my key is ", AWS_ID, ", why is it denied?", "AWS_ACCESS_KEY", id="aws-access-key"),
    pytest.param("creds: ", "ASIA" + "QR7" * 5 + "Z", "\n", "AWS_ACCESS_KEY", id="aws-session-key"),
    # AWS's documented example key is reported: a prompt cannot prove it is the example.
    pytest.param("AWS_ACCESS_KEY_ID=", "AKIA" + "IOSFODNN7" + "EXAMPLE", "", "AWS_ACCESS_KEY", id="aws-documented-example"),
    pytest.param("aws_secret_access_key = ", token(40, "aws"), "\n", "AWS_SECRET_KEY", id="aws-secret-ini"),
    pytest.param('{"SecretAccessKey": "', token(40, "aws2"), '"}', "AWS_SECRET_KEY", id="aws-secret-json"),
    pytest.param("maps: ", "AIza" + token(35, "gcp"), " (browser key)", "GCP_API_KEY", id="gcp"),
    pytest.param("git clone with ", "ghp_" + token(36, "gh"), " please", "GITHUB_TOKEN", id="github-classic"),
    pytest.param("GH=", "github_pat_" + token(22, "a") + "_" + token(59, "b"), "", "GITHUB_TOKEN", id="github-fine-grained"),
    pytest.param("token ", "glpat-" + token(20, "gl"), ".", "GITLAB_TOKEN", id="gitlab"),
    pytest.param("bot: ", "xoxb-" + "1234567890-" + "1234567890123-" + token(24, "sl"), "", "SLACK_TOKEN", id="slack-bot"),
    pytest.param("post to https://", "hooks.slack.com/" + SLACK_PATH, " now", "SLACK_WEBHOOK", id="slack-webhook"),
    # The generic rule sees `KEY=value` too; the precise label wins.
    pytest.param("STRIPE_API_KEY=", "sk_" + "live_" + token(24, "st"), " in prod", "STRIPE_KEY", id="stripe-over-generic"),
    pytest.param("key: ", "sk-" + token(48, "oa"), "", "OPENAI_KEY", id="openai-legacy"),
    pytest.param("use ", "sk-proj-" + token(40, "op") + "-" + token(20, "oq") + "_" + token(30, "or"), " today", "OPENAI_KEY", id="openai-project"),
    pytest.param("x-api-key: ", "sk-ant-api03-" + token(93, "an") + "AA", "", "ANTHROPIC_KEY", id="anthropic"),
    pytest.param("HF ", "hf_" + token(34, "hf"), " is mine", "HUGGINGFACE_TOKEN", id="huggingface"),
    pytest.param("DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=", token(86, "az") + "==", ";EndpointSuffix=core.windows.net", "AZURE_STORAGE_KEY", id="azure-storage"),
    pytest.param("here:\n", pem("RSA"), "\nthanks", "PRIVATE_KEY", id="pem-rsa"),
    pytest.param("", pem("EC"), "", "PRIVATE_KEY", id="pem-ec"),
    pytest.param("deploy key:\n", pem("OPENSSH"), "\n", "PRIVATE_KEY", id="pem-openssh"),
    pytest.param("", pem("PGP"), "", "PRIVATE_KEY", id="pem-pgp"),
    pytest.param("pkcs8 ", pem(""), " end", "PRIVATE_KEY", id="pem-plain"),
    pytest.param("", pem("ENCRYPTED"), "", "PRIVATE_KEY", id="pem-encrypted"),
    pytest.param("it starts with\n", pem("RSA", end=False), "\n\nand then?", "PRIVATE_KEY", id="pem-cut-short"),
    pytest.param("session ", JWT, " expired", "JWT", id="jwt"),
    pytest.param("curl -H 'Authorization: Bearer ", token(12, "b1"), "'", "BEARER_TOKEN", id="bearer-header-short"),
    pytest.param("authorization: bearer ", token(40, "b2"), "", "BEARER_TOKEN", id="bearer-header-both-rules"),
    pytest.param("send Bearer ", token(32, "b3") + "-" + token(8, "b4"), " along", "BEARER_TOKEN", id="bearer-bare-long"),
    pytest.param("DATABASE_URL=postgres://app:", "s3cr" + token(10, "pw"), "@db.internal:5432/app", "PASSWORD_IN_URL", id="password-in-url"),
    pytest.param("redis://:", token(16, "rd"), "@cache:6379/0", "PASSWORD_IN_URL", id="password-in-url-no-user"),
    pytest.param('config = {"api_key": "', token(32, "g1"), '"}', "GENERIC_SECRET", id="generic-json"),
    pytest.param("api_key = '", token(24, "g2"), "'", "GENERIC_SECRET", id="generic-python"),
    pytest.param("token: ", token(20, "g3"), "\nnext: 1", "GENERIC_SECRET", id="generic-yaml"),
    pytest.param("export DB_PASSWORD=", token(18, "g4"), "", "GENERIC_SECRET", id="generic-env"),
    pytest.param("const apiKey = `", token(30, "g5"), "`;", "GENERIC_SECRET", id="generic-camel-case"),
    pytest.param('"client_secret": "', hexdigest("cs"), '"', "GENERIC_SECRET", id="generic-hex"),
    pytest.param('password = "', "Tr0ub4dor&3" + "xK9mQ!vZ", '"', "GENERIC_SECRET", id="generic-password"),
]  # fmt: skip


@pytest.mark.parametrize(("before", "secret", "after", "label"), SECRET_CASES)
def test_each_secret_label_and_its_exact_span(before, secret, after, label):
    text = before + secret + after
    start = len(before)
    assert found(SECRETS, text) == [(0, label, (start, start + len(secret)))]


def test_every_secret_label_has_a_case():
    assert {case.values[3] for case in SECRET_CASES} == set(SECRET_LABELS)


def test_scores_exact_formats_over_guesses():
    text = f"id {AWS_ID} and api_key = '{token(24, 'g2')}'"
    assert {f.label: f.score for f in SECRETS.scan([text])} == {
        "AWS_ACCESS_KEY": 1.0,
        "GENERIC_SECRET": 0.8,
    }


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("request 123e4567-e89b-12d3-a456-426614174000 failed", id="uuid"),
        pytest.param('{"idempotency_key": "123e4567-e89b-12d3-a456-426614174000"}', id="uuid-after-key"),
        pytest.param("Revert commit " + hexdigest("c1") + " on main", id="commit-hash"),
        pytest.param("merge " + hexdigest("c2")[:12] + " and " + hexdigest("c3"), id="short-and-long-hashes"),
        pytest.param("The key to success is a secret token of appreciation and a good password.", id="plain-words"),
        pytest.param("How should I rotate API keys and where do I store my secret token safely?", id="talk-about-keys"),
        pytest.param("blob " + base64.b64encode(b"nothing to see here, just some ordinary words").decode(), id="base64-of-text"),
        pytest.param("version: 1.22.3-beta.4+build.20240101", id="version"),
        pytest.param("key_version = 2.14.4-rc.1+build.56789", id="version-after-key"),
        pytest.param("use sk-abc123 for now", id="sk-short"),
        pytest.param("prefix sk-" + token(12, "short"), id="sk-twelve"),
        pytest.param("install sk-learn-compatible-estimator-v2", id="sk-slug"),
        pytest.param("task-" + token(30, "t") + " is running", id="sk-inside-a-word"),
        pytest.param('api_key = "${OPENAI_API_KEY}"', id="template-var"),
        pytest.param('api_key = os.environ["OPENAI_API_KEY"]', id="environ-lookup"),
        pytest.param("api_key = process.env.OPENAI_API_KEY_PRODUCTION", id="env-reference"),
        pytest.param('password: "********************"', id="mask"),
        pytest.param("token: <your-token-here>", id="placeholder"),
        pytest.param('secret = "my-super-secret-key-2024"', id="word-slug"),
        pytest.param("monkey: banana", id="key-inside-word"),
        pytest.param("Bearer tokens are used for stateless authentication.", id="bearer-prose"),
        pytest.param("Authorization: Bearer $TOKEN", id="bearer-variable"),
        pytest.param("Authorization: Bearer YOUR_TOKEN_HERE", id="bearer-placeholder"),
        pytest.param("see https://user@example.com/path and http://example.com:8080/x", id="url-without-password"),
        pytest.param("postgres://user:${DB_PASS}@host/db", id="url-password-variable"),
        pytest.param("postgres://user:password@localhost/db", id="url-password-doc-word"),
        pytest.param("ftp://anonymous:****@ftp.example.org", id="url-password-mask"),
        pytest.param("call hf_hub_download() first", id="hf-identifier"),
        pytest.param("AKIA" + "z2" * 8, id="aws-lower-case"),
        pytest.param("XAKIA" + "Z2" * 8, id="aws-inside-a-word"),
        pytest.param("header eyJhbGciOi.eyJzdWIi.sig", id="jwt-too-short"),
        pytest.param("-----BEGIN PUBLIC KEY-----\n" + token(64, "pub") + "\n-----END PUBLIC KEY-----", id="public-key"),
        pytest.param("glpat-short", id="gitlab-short"),
        pytest.param("sk_test_" + token(24, "st"), id="stripe-test-key"),
        pytest.param("Asia and Europe; Straße; ﬁnance", id="prose-with-unicode"),
    ],
)  # fmt: skip
def test_look_alikes_are_not_secrets(text):
    assert found(SECRETS, text) == []


@pytest.mark.parametrize(
    ("text", "label", "span"),
    [
        pytest.param("badge EMP-004211 entered", "EMPLOYEE_ID", (6, 16), id="regex"),
        pytest.param("see TICK-42 and", "TICKET", (4, 11), id="regex-ignore-case"),
        pytest.param("Is Blue Falcon on track?", "PROJECT_CODENAME", (3, 14), id="keyword"),
        pytest.param("BLUE FALCON!", "PROJECT_CODENAME", (0, 11), id="keyword-upper-case"),
        pytest.param("the blue\n  falcon team", "PROJECT_CODENAME", (4, 17), id="keyword-any-whitespace"),
        pytest.param("codename: " + wide("nightjar") + ".", "PROJECT_CODENAME", (10, 18), id="keyword-full-width"),
        pytest.param(wide("BLUE FALCON"), "PROJECT_CODENAME", (0, 11), id="keyword-full-width-space"),
        pytest.param("the ﬁnance plan", "TEAM", (4, 10), id="ligature-in-text"),
        pytest.param("Große ﬁnance; nightjar", "PROJECT_CODENAME", (14, 22), id="offsets-after-widening"),
        pytest.param("ask STRASSE now", "TEAM", (4, 11), id="sharp-s-folds-to-ss"),
        pytest.param("ask Straße now", "TEAM", (4, 10), id="sharp-s-in-text"),
        pytest.param("ein cafe\u0301 hier", "TEAM", (4, 9), id="decomposed-accent"),
        pytest.param("ß cafe\u0301 ﬁ nightjar", "PROJECT_CODENAME", (10, 18), id="offsets-after-composing"),
        pytest.param("I write C++ daily", "TEAM", (8, 11), id="keyword-ending-in-symbol"),
        pytest.param("这是机密文件", "CLASSIFIED", (2, 4), id="keyword-in-unspaced-script"),
        pytest.param("우리 회사는 크다", "CLASSIFIED", (3, 5), id="keyword-with-hangul-particle"),
    ],
)  # fmt: skip
def test_policy_regexes_and_keywords(text, label, span):
    assert (0, label, span) in found(POLICY, text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("badge EMP-00421", id="regex-too-short"),
        pytest.param("nightjars and bluefalcon", id="keyword-not-a-whole-word"),
        pytest.param("refinance", id="keyword-inside-a-word"),
        pytest.param("Blue  Falconry", id="keyword-prefix-of-a-word"),
    ],
)
def test_policy_rules_on_whole_words_only(text):
    assert found(POLICY, text) == []


def test_overlapping_keywords_of_two_labels_are_both_found():
    det = detector(
        keywords=[
            {"name": "PROJECT", "phrases": ["blue falcon"]},
            {"name": "BIRD", "phrases": ["falcon", "blue falcon"]},
        ]
    )
    assert found(det, "the Blue Falcon") == [
        (0, "BIRD", (4, 15)),
        (0, "PROJECT", (4, 15)),
    ]


def test_a_longer_phrase_wins_and_a_shorter_one_remains():
    det = detector(keywords=[{"name": "K", "phrases": ["blue", "blue falcon", "blue falcon one"]}])
    assert found(det, "blue falcon one; blue falconry; blue") == [
        (0, "K", (0, 15)),
        (0, "K", (17, 21)),
        (0, "K", (32, 36)),
    ]


def test_thousands_of_phrases_in_one_list():
    phrases = [f"codename {token(8, str(i)).lower()}" for i in range(3000)]
    det = detector(keywords=[{"name": "CODENAME", "phrases": phrases}])
    text = f"we shipped {phrases[1234].upper()} yesterday"
    assert found(det, text) == [(0, "CODENAME", (11, 11 + len(phrases[1234])))]


def test_findings_per_text_in_order_and_without_values():
    texts = ["nothing here", f"a {AWS_ID} b {JWT}", "EMP-123456"]
    det = build(
        {},
        [
            PatternsConfig.model_validate({"secrets": ["AWS_ACCESS_KEY", "JWT"]}),
            PatternsConfig.model_validate(
                {"regexes": [{"name": "EMPLOYEE_ID", "pattern": r"EMP-\d{6}"}]}
            ),
        ],
    )
    findings = det.scan(texts)
    assert [(f.detector, f.text_index, f.label, f.span) for f in findings] == [
        ("patterns", 1, "AWS_ACCESS_KEY", (2, 22)),
        ("patterns", 1, "JWT", (25, 25 + len(JWT))),
        ("patterns", 2, "EMPLOYEE_ID", (0, 10)),
    ]
    assert not any(AWS_ID in repr(f) or JWT in repr(f) for f in findings)


def test_only_the_enabled_secrets_are_reported():
    det = detector(secrets=["GENERIC_SECRET"])
    github = "ghp_" + token(36, "gh")
    # Without GITHUB_TOKEN the generic rule still sees a credential after `token =`.
    assert found(det, f"{github} and token = {github}") == [
        (0, "GENERIC_SECRET", (len(github) + 13, 2 * len(github) + 13))
    ]


@pytest.mark.parametrize(
    "unit",
    [
        pytest.param("eyJ", id="jwt-prefixes"),
        pytest.param("sk-", id="openai-prefixes"),
        pytest.param("sk-ant-", id="anthropic-prefixes"),
        pytest.param("glpat-", id="gitlab-prefixes"),
        pytest.param("xoxb-1-", id="slack-prefixes"),
        pytest.param("-----BEGIN PRIVATE KEY-----\n", id="pem-headers-without-end"),
        pytest.param("key=", id="generic-assignments"),
        pytest.param("key", id="generic-keywords"),
        pytest.param("authorization: bearer ", id="bearer-headers"),
        pytest.param("a://b:c", id="url-credentials"),
        pytest.param("ß", id="widening-fold"),
        pytest.param("e\u0301", id="composing-fold"),
    ],
)
def test_hostile_texts_cost_linear_time(unit):
    # A quadratic pattern needs minutes on 200 KB of its own prefix; linear ones
    # need milliseconds, so the bound is loose enough for any machine.
    det = detector(secrets=True, keywords=[{"name": "K", "phrases": ["blue falcon", "c++"]}])
    text = unit * (200_000 // len(unit))
    started = time.perf_counter()
    det.scan([text])
    assert time.perf_counter() - started < 2.0


NOISE = ["a", "Z", " ", "1", ",", ".", "ß", "ﬁ", "é", "e\u0301", "İ", "\u1100\u1161", "가", "\U0001d400", "\U0001f600", "\uff0c", "½", "A\u030a", "ǅ", wide("x")]  # fmt: skip
VARIANTS = ["Blue Falcon", "BLUE  FALCON", wide("blue falcon"), "blue\nfalcon", "Straße", "STRASSE", "ﬁnance", "FINANCE", "café", "cafe\u0301", "CAFE\u0301"]  # fmt: skip


@given(
    st.lists(
        st.one_of(
            st.lists(st.sampled_from(NOISE), max_size=6).map("".join),
            st.sampled_from(VARIANTS).map(lambda v: (v,)),
        ),
        max_size=8,
    )
)
def test_keyword_spans_are_the_original_text_whatever_surrounds_them(parts):
    text, spans = "", []
    for part in parts:
        if isinstance(part, tuple):  # a phrase variant, set apart by spaces
            spans.append((len(text) + 1, len(text) + 1 + len(part[0])))
            text += f" {part[0]} "
        else:
            text += part
    got = {f.span for f in POLICY.scan([text]) if f.label in {"PROJECT_CODENAME", "TEAM"}}
    assert set(spans) <= got


def test_a_token_in_a_url_is_two_findings():
    github = "ghp_" + token(36, "gh")
    text = f"clone https://x:{github}@github.com/acme/app"
    span = (16, 16 + len(github))
    assert found(SECRETS, text) == [(0, "GITHUB_TOKEN", span), (0, "PASSWORD_IN_URL", span)]


async def test_large_texts_scan_in_a_worker_thread_with_the_same_findings():
    filler = "Please summarise this paragraph about the quarterly roadmap. " * 400
    texts = [filler + AWS_ID + " " + filler, "short " + JWT, filler + "Blue Falcon"]
    det = build(
        {},
        [
            PatternsConfig.model_validate(
                {"secrets": True, "keywords": [{"name": "P", "phrases": ["blue falcon"]}]}
            )
        ],
    )
    assert sum(map(len, texts)) > INLINE_LIMIT
    assert det.offloads(texts)
    assert not det.offloads(texts[1:2])
    findings = await det.detect(texts, context())
    assert findings == det.scan(texts)
    assert [(f.text_index, f.label, f.span) for f in findings] == [
        (0, "AWS_ACCESS_KEY", (len(filler), len(filler) + 20)),
        (1, "JWT", (6, 6 + len(JWT))),
        (2, "P", (len(filler), len(filler) + 11)),
    ]
    assert await det.detect(texts[1:2], context(Direction.OUTPUT)) == det.scan(texts[1:2])


# Config: what a policy file may say, and what it may not.


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param({"regexes": [{"name": "BAD", "pattern": r"EMP-(\d"}]}, "regex BAD: missing ), unterminated subpattern at position 4", id="bad-regex"),
        pytest.param({"regexes": [{"name": "BAD", "pattern": "[z-a]"}]}, "regex BAD: bad character range z-a at position 1", id="bad-range"),
        pytest.param({"regexes": [{"name": "STARS", "pattern": "a*"}]}, "regex STARS can match the empty string", id="empty-match-star"),
        pytest.param({"regexes": [{"name": "EDGE", "pattern": r"\b"}]}, "regex EDGE can match the empty string", id="empty-match-boundary"),
        pytest.param({"regexes": [{"name": "LOOK", "pattern": "(?=EMP)"}]}, "regex LOOK can match the empty string", id="empty-match-lookahead"),
        pytest.param({"regexes": [{"name": "OR", "pattern": "EMP|"}]}, "regex OR can match the empty string", id="empty-match-alternative"),
        pytest.param({"regexes": [{"name": "X", "pattern": "a"}, {"name": "X", "pattern": "b"}]}, "X defined more than once", id="duplicate-regex"),
        pytest.param({ "regexes": [{"name": "X", "pattern": "a"}], "keywords": [{"name": "X", "phrases": ["a"]}], }, "X defined more than once", id="duplicate-across-kinds"),
        pytest.param({"regexes": [{"name": "GITHUB_TOKEN", "pattern": "gh"}]}, "GITHUB_TOKEN is a built-in secret label", id="secret-label-taken"),
        pytest.param({"secrets": ["AWS_ACCESS_KEY", "AWS_KEYS"]}, "unknown secret label AWS_KEYS", id="unknown-secret-label"),
        pytest.param({"regexes": [{"name": "employee_id", "pattern": "a"}]}, "String should match pattern", id="lower-case-name"),
        pytest.param({"regexes": [{"name": "E", "pattern": "a", "score": 1.5}]}, "less than or equal to 1", id="score-above-one"),
        pytest.param({"keywords": [{"name": "K", "phrases": []}]}, "at least 1 item", id="no-phrases"),
        pytest.param({"keywords": [{"name": "K", "phrases": ["ok", "  "]}]}, "keywords K: a phrase is blank", id="blank-phrase"),
        pytest.param({"regex": []}, "Extra inputs are not permitted", id="unknown-key"),
        pytest.param({"regexes": [{"name": "E", "pattern": "a", "flags": "i"}]}, "Extra inputs are not permitted", id="unknown-rule-key"),
    ],
)  # fmt: skip
def test_invalid_configs_say_what_is_wrong(config, message):
    with pytest.raises(ValidationError, match=None) as caught:
        PatternsConfig.model_validate(config)
    assert message in str(caught.value)


def rules(**config: Any) -> PatternsConfig:
    return PatternsConfig.model_validate(config)


EMP = {"name": "EMPLOYEE_ID", "pattern": r"EMP-\d{6}"}
CODENAMES = {"name": "CODENAME", "phrases": ["Blue Falcon", "nightjar"]}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(rules(regexes=[EMP]), rules(regexes=[{**EMP, "pattern": r"EMP-\d{7}"}]), id="regex-pattern"),
        pytest.param(rules(regexes=[EMP]), rules(regexes=[{**EMP, "ignore_case": True}]), id="regex-flags"),
        pytest.param(rules(regexes=[EMP]), rules(regexes=[{**EMP, "score": 0.5}]), id="regex-score"),
        pytest.param(rules(keywords=[CODENAMES]), rules(keywords=[{**CODENAMES, "phrases": ["nightjar"]}]), id="keyword-phrases"),
        pytest.param(rules(regexes=[EMP]), rules(keywords=[{"name": "EMPLOYEE_ID", "phrases": ["emp"]}]), id="regex-and-keyword"),
    ],
)  # fmt: skip
def test_one_name_defined_two_ways_across_policies_is_an_error(first, second):
    with pytest.raises(ConfigError, match=r"EMPLOYEE_ID|CODENAME") as caught:
        build({}, [first, second])
    assert "defined differently" in str(caught.value)


def test_one_name_defined_the_same_way_twice_is_one_rule():
    same = rules(keywords=[{"name": "CODENAME", "phrases": ["NIGHTJAR", "blue  falcon"]}])
    det = build({}, [rules(regexes=[EMP], keywords=[CODENAMES]), rules(regexes=[EMP]), same])
    assert found(det, "EMP-123456 nightjar") == [
        (0, "EMPLOYEE_ID", (0, 10)),
        (0, "CODENAME", (11, 19)),
    ]


def test_options_are_refused():
    with pytest.raises(ConfigError, match="patterns takes no options, got: threads"):
        build({"threads": 2}, [])


def test_no_configs_find_nothing():
    det = build({}, [])
    assert det.name == "patterns"
    assert det.directions == frozenset(Direction)
    assert det.scan([AWS_ID, "EMP-123456"]) == []


@pytest.mark.parametrize(
    ("configs", "expected"),
    [
        pytest.param([], set(), id="none"),
        pytest.param([rules()], set(), id="empty"),
        pytest.param([rules(secrets=True)], set(SECRET_LABELS), id="all-secrets"),
        pytest.param([rules(secrets=False, regexes=[EMP])], {"EMPLOYEE_ID"}, id="no-secrets"),
        pytest.param([rules(regexes=[EMP], secrets=["JWT"]), rules(keywords=[CODENAMES], secrets=["JWT", "PRIVATE_KEY"])], {"EMPLOYEE_ID", "CODENAME", "JWT", "PRIVATE_KEY"}, id="union-of-policies"),
    ],
)  # fmt: skip
def test_labels_are_the_names_and_the_enabled_secrets(configs, expected):
    assert labels(configs) == expected


def test_the_builtin_registry_builds_it_from_policy_configs():
    registry = DetectorRegistry.builtin()
    entry = registry.entry("patterns")
    assert entry is ENTRY
    config = entry.config.model_validate({"secrets": ["AWS_ACCESS_KEY"]})
    det = registry.build("patterns", {}, [config])
    assert entry.labels([config]) == {"AWS_ACCESS_KEY"}
    assert [f.label for f in det.scan([AWS_ID])] == ["AWS_ACCESS_KEY"]

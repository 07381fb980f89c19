"""The built-in secrets set of the ``patterns`` detector: one precise rule per label.

The rules follow gitleaks: a vendor's fixed prefix and alphabet where it has one
(score 1.0), a keyword context where it has none. ``GENERIC_SECRET`` is the one
guess: a high-entropy value right after a word such as ``key`` or ``token``, so it
scores lower (0.8) and gives way to any precise rule that covers the same text.

Two choices worth knowing:

- AWS's documented example key ``AKIAIOSFODNN7EXAMPLE`` is reported like any
  other key. A prompt cannot prove it is the example, an allow list would be a way
  around the rule, and redacting it costs nothing.
- Test-mode Stripe keys (``sk_test_``) are not reported: they reach no money and
  appear in every tutorial; ``STRIPE_KEY`` means a live key.

Speed: a rule whose pattern starts with a literal (``AKIA``, ``ghp_``) is found by
the regex engine's own fast prefix search, so it costs about a microsecond on a
prompt. A case-insensitive pattern would switch that search off (and cost some
40 microseconds), so the context rules are written in lower case and run on the
text with its ASCII letters lowered, which keeps every offset; they also carry
``anchors``, words one of which every match contains, and skip a text with none.
Every pattern runs in linear time on any text, hostile ones included (see
``_first`` and the private key body).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

GENERIC = "GENERIC_SECRET"
GENERIC_SCORE = 0.8
GENERIC_MIN_ENTROPY = 3.5  # bits per character; random base62 of 16 chars has about 3.7

# What a secret value may be made of in a `key = value` context, and what ends it.
# A trailing dot is left out of the value (it ends the sentence far more often),
# and `=` only pads the end, so `key=key=key=...` cannot make one long value.
_VALUE = r"[A-Za-z0-9_\-+/~.!@#$%^&*]{15,511}[A-Za-z0-9_\-+/~!@#$%^&*]={0,2}"
_VALUE_END = r"(?![A-Za-z0-9_\-+/=~!@#$%^&*])"
_ASSIGN = r"""["']?[ \t]{0,4}(?:=>|:=|[:=])[ \t]{0,4}["'`]?"""

_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_VERSION = re.compile(r"v?\d+(?:\.\d+)+(?:[-+][0-9A-Za-z.+-]*)?", re.IGNORECASE)
_PLACEHOLDERS = frozenset({"password", "passwd", "pass", "pwd", "secret", "changeme"})


@dataclass(frozen=True, slots=True)
class SecretRule:
    """One way to recognise a label. ``group`` is the part of the match the span
    covers; ``check`` vets that part (as written in the text); ``lowered`` rules are
    written in lower case and match the text with its ASCII letters lowered, and
    their ``anchors`` (one of which every match contains) gate them."""

    label: str
    regex: re.Pattern[str]
    score: float = 1.0
    group: int | str = 0
    check: Callable[[str], bool] | None = None
    lowered: bool = False
    anchors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SecretMatch:
    label: str
    score: float
    start: int
    end: int


def shannon_entropy(value: str) -> float:
    """Bits per character of the value's own character distribution."""
    size = len(value)
    return -sum(n / size * math.log2(n / size) for n in Counter(value).values())


def _letters_and_digits(value: str) -> bool:
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _mixed_case_and_digits(value: str) -> bool:
    return (
        any(c.isdigit() for c in value)
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
    )


def _mixed_case(value: str) -> bool:
    return any(c.isupper() for c in value) and any(c.islower() for c in value)


def looks_random(value: str) -> bool:
    """The GENERIC_SECRET test: long, letters and digits, high entropy, and not one
    of the shapes that follow `key:` innocently (ids, versions, word slugs)."""
    if len(value) < 16 or not _letters_and_digits(value):
        return False
    if _UUID.fullmatch(value) or _VERSION.fullmatch(value):
        return False
    if shannon_entropy(value) < GENERIC_MIN_ENTROPY:
        return False
    # `my-secret-key-2024` is a slug of words: a random value with separators
    # still mixes upper case, lower case and digits.
    return not any(c in value for c in "-_.") or _mixed_case_and_digits(value)


def _real_password(value: str) -> bool:
    """Not a template (`$PASS`, `{pw}`, `<password>`, `%s`), a mask or a doc word."""
    if value[0] in "${<%" or len(set(value)) == 1:
        return False
    return value.lower() not in _PLACEHOLDERS


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII)


def _first(prefix: str, width: int, run: str) -> str:
    """A literal prefix of ``width`` characters that starts a token: it must not
    continue a run of the token's own characters. The lookbehind goes after the
    prefix, not before it, where it would switch the fast prefix search off; and
    without it every `sk-` inside one long `sk-sk-sk-...` run would rescan the run
    to its end (quadratic time on a hostile body)."""
    return rf"{prefix}(?<!{run}.{{{width}}})"


_B64URL = "[A-Za-z0-9_-]"
_ALNUM = "[A-Za-z0-9]"
_WORD = r"\w"
# A block's body stops at the next `-----`, so a text of many BEGIN lines and no
# END costs one pass, not one pass per BEGIN.
_PEM_BODY = r"(?:[^-]|-(?!----)){0,65536}"
_PEM_END = r"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
# A block cut short (a truncated paste, a stream still arriving) is still a leak:
# without its END line the span runs over the header lines and base64 lines after it.
_PEM_BODY_LINES = r"(?:(?:\\n|\r?\n)[ \t]*(?:[A-Za-z0-9+/=]+|[A-Za-z-]+: [^\r\n\\]*))*"

RULES: tuple[SecretRule, ...] = (
    SecretRule(
        "AWS_ACCESS_KEY",
        _rx(_first("(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])", 4, _ALNUM) + r"[A-Z2-7]{16}(?!\w)"),
    ),
    SecretRule(
        "AWS_SECRET_KEY",
        _rx(
            r"(?:aws[\w.-]{0,20}?secret[\w.-]{0,20}?|secret_?access_?key)"
            + _ASSIGN
            + r"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
        group="v",
        check=_mixed_case_and_digits,
        lowered=True,
        anchors=("secret",),
    ),
    SecretRule("GCP_API_KEY", _rx(_first("AIza", 4, _B64URL) + rf"{_B64URL}{{35}}(?!{_B64URL})")),
    SecretRule(
        "GITHUB_TOKEN",
        _rx(
            "(?:"
            + _first("gh[pousr]_", 4, _WORD)
            + "[A-Za-z0-9]{36}|"
            + _first("github_pat_", 11, _WORD)
            + r"\w{82})(?!\w)"
        ),
    ),
    SecretRule(
        "GITLAB_TOKEN",
        _rx(_first("glpat-", 6, _B64URL) + rf"{_B64URL}{{20,}}(?:\.{_B64URL}+)*"),
    ),
    SecretRule(
        "SLACK_TOKEN",
        _rx(_first("xox[abprs]-", 5, "[A-Za-z0-9-]") + r"[0-9]{1,13}-[A-Za-z0-9-]{10,}"),
    ),
    # The span starts at the host: `https://` is no secret.
    SecretRule(
        "SLACK_WEBHOOK",
        _rx(r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,}"),
    ),
    SecretRule("STRIPE_KEY", _rx(_first("[rs]k_live_", 8, _WORD) + r"[A-Za-z0-9]{10,99}(?!\w)")),
    SecretRule(
        "OPENAI_KEY",
        _rx(_first("sk-", 3, _B64URL) + rf"(?!ant-)(?:proj-|svcacct-|admin-)?{_B64URL}{{20,}}"),
        check=_mixed_case_and_digits,
    ),
    SecretRule("ANTHROPIC_KEY", _rx(_first("sk-ant-", 7, _B64URL) + rf"{_B64URL}{{32,}}")),
    SecretRule(
        "HUGGINGFACE_TOKEN",
        _rx(_first("hf_", 3, _WORD) + r"[A-Za-z0-9]{34}(?!\w)"),
        check=_mixed_case,
    ),
    SecretRule("AZURE_STORAGE_KEY", _rx(r"AccountKey=(?P<v>[A-Za-z0-9+/]{43,}={0,2})"), group="v"),
    SecretRule(
        "PRIVATE_KEY",
        _rx(
            r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
            rf"(?:{_PEM_BODY}{_PEM_END}|{_PEM_BODY_LINES})"
        ),
    ),
    SecretRule(
        "JWT",
        _rx(_first("eyJ", 3, _B64URL) + rf"{_B64URL}{{10,}}\.eyJ{_B64URL}{{10,}}\.{_B64URL}*"),
    ),
    # `Authorization: Bearer t` names a credential whatever its length; a bare
    # `Bearer t` needs a long token, or prose ("the bearer of ...") would match.
    SecretRule(
        "BEARER_TOKEN",
        _rx(
            _first("authorization", 13, _WORD)
            + r"[\"']?[ \t]{0,4}[:=][ \t]{0,4}[\"']?bearer[ \t]+(?P<v>[A-Za-z0-9._~+/-]{8,}=*)"
        ),
        group="v",
        check=_letters_and_digits,
        lowered=True,
        anchors=("authorization",),
    ),
    SecretRule(
        "BEARER_TOKEN",
        _rx(_first("bearer", 6, _WORD) + r"[ \t]+(?P<v>[A-Za-z0-9._~+/-]{20,}=*)"),
        group="v",
        check=_letters_and_digits,
        lowered=True,
        anchors=("bearer",),
    ),
    SecretRule(
        "PASSWORD_IN_URL",
        # The lookbehind sits after the literal `://` so the prefix search stays on.
        _rx(r"://(?<=[A-Za-z0-9]://)[^\s:@/?#\"'<>]*:(?P<v>[^\s@/?#\"'<>]+)@(?=[A-Za-z0-9\[])"),
        group="v",
        check=_real_password,
    ),
    # Any identifier holding the word counts (api_key, apiKey, DB_PASSWORD).
    SecretRule(
        GENERIC,
        _rx(
            r"(?:key|secret|token|passw(?:or)?d|pwd)[\w.-]{0,30}?"
            + _ASSIGN
            + rf"(?P<v>{_VALUE}){_VALUE_END}"
        ),
        score=GENERIC_SCORE,
        group="v",
        check=looks_random,
        lowered=True,
        anchors=("key", "secret", "token", "passw", "pwd"),
    ),
)

SECRET_LABELS: tuple[str, ...] = tuple(dict.fromkeys(rule.label for rule in RULES))


def rules_for(labels: frozenset[str]) -> tuple[SecretRule, ...]:
    return tuple(rule for rule in RULES if rule.label in labels)


def find_secrets(text: str, rules: Sequence[SecretRule]) -> list[SecretMatch]:
    """Every secret in the text; a GENERIC_SECRET that overlaps a precise finding is
    the same value seen twice (`api_key = "sk-..."`) and is dropped."""
    lowered = _ascii_lowered(text) if any(rule.lowered for rule in rules) else text
    found: list[SecretMatch] = []
    for rule in rules:
        haystack = lowered if rule.lowered else text
        if not rule.anchors or any(word in haystack for word in rule.anchors):
            found.extend(
                SecretMatch(rule.label, rule.score, start, end)
                for start, end in _spans(rule, haystack, text)
            )
    precise = [m for m in found if m.label != GENERIC]
    return precise + [m for m in found if m.label == GENERIC and not _overlaps(m, precise)]


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _ascii_lowered(text: str) -> str:
    # str.lower is fast but may change a length ("İ" becomes two characters);
    # translate keeps every offset, at ten times the cost on non-ASCII text.
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else text.translate(_ASCII_LOWER)


def _spans(rule: SecretRule, haystack: str, text: str) -> Iterator[tuple[int, int]]:
    pos = 0
    while (match := rule.regex.search(haystack, pos)) is not None:
        start, end = match.span(rule.group)
        if rule.check is None or rule.check(text[start:end]):
            yield start, end
            pos = match.end()
        else:
            # A rejected match may hide an accepted one that starts inside it.
            pos = match.start() + 1


def _overlaps(match: SecretMatch, others: Sequence[SecretMatch]) -> bool:
    return any(o.start < match.end and match.start < o.end for o in others)

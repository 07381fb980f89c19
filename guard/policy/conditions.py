"""Conditions: compiled once at load into plain functions of one exchange's ``Facts``.

A condition is a mapping; every key must hold. The keys:

    all: [cond, ...]   any: [cond, ...]   not: cond   expr: "CEL expression"
    tenant.id | tenant.<attribute>         model.name | model.upstream | model.licence.<term>
    request.route | request.direction | request.size | request.tokens | request.stream
        | request.texts                    (size: characters; tokens: estimated, size / 4)
    <detector>.any: [LABEL, ...] | "*" | {labels: [...] | "*", min_score: 0.5}
    <detector>.all: [LABEL, ...]           <detector>.count: <comparison>
    <detector>.<LABEL>: true | false | <comparison on its max score>
    <detector>.<LABEL>.count: <comparison>

A context key takes a value (equal), a list (one of), or operators
``{in, not_in, contains, empty, eq, ne, gt, gte, lt, lte}``. A comparison is a number
(equal) or operators ``{gt, gte, lt, lte, eq, ne}``. An attribute a tenant does not
have is null: ``tenant.commercial: false`` holds only for tenants marked so.

``expr`` is CEL (cel-python) over ``tenant``, ``model``, ``request`` and
``findings`` (``findings.<detector>.<LABEL>.{count, max_score}``). CEL costs about
half a millisecond an evaluation here, so matchers come first where they can say it.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.celtypes import BoolType
from celpy.evaluation import CELEvalError

from guard.registry.cards import LicenceCard, ModelCard
from guard.tenancy import Tenant

Check = Callable[["Facts"], bool]
Path = tuple[str | int, ...]
_NUMERIC_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_LICENCE_TERMS = frozenset(f.name for f in dataclasses.fields(LicenceCard))
_MODEL_KEYS = frozenset({"name", "upstream", "upstream_model"})
_REQUEST_KEYS = frozenset({"route", "direction", "size", "tokens", "stream", "texts"})
_CEL_NAMES = ("tenant", "model", "request", "findings")


@dataclass(slots=True)
class Facts:
    """What conditions see of one scan of one direction."""

    direction: str
    findings: dict[str, dict[str, tuple[int, float]]]  # detector -> label -> (count, max score)
    model: ModelCard
    tenant: Tenant | None
    route: str
    stream: bool
    size: int
    texts: int
    _cel: Any = field(default=None, repr=False)

    def request(self, key: str) -> Any:
        if key == "tokens":
            return (self.size + 3) // 4
        return getattr(self, key)

    def cel(self) -> Any:
        if self._cel is None:
            self._cel = json_to_cel(_activation(self))
        return self._cel


class CompileError(Exception):
    """A condition that cannot be compiled; ``path`` is relative to the condition."""

    def __init__(self, path: Path, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.column = column


class ExpressionError(Exception):
    """A CEL expression failed at run time (a missing key, a non-bool result)."""


@dataclass(frozen=True, slots=True)
class Compiled:
    check: Check
    detectors: frozenset[str]  # the detectors whose findings it reads
    uses_expr: bool


class ConditionCompiler:
    """Compiles conditions against the detectors a policy declares: ``labels`` maps each
    to the labels it can report (None: any)."""

    def __init__(self, labels: Mapping[str, frozenset[str] | None]) -> None:
        self._labels = labels
        self._env = celpy.Environment()

    def compile(self, condition: Mapping[str, Any] | None) -> Compiled:
        if condition is None:
            return Compiled(_always, frozenset(), uses_expr=False)
        used: set[str] = set()
        exprs: list[bool] = []
        check = self._node(condition, (), used, exprs)
        return Compiled(check, frozenset(used), uses_expr=bool(exprs))

    def _node(self, cond: Any, path: Path, used: set[str], exprs: list[bool]) -> Check:
        if not isinstance(cond, Mapping) or not cond:
            raise CompileError(path, "a condition is a non-empty mapping")
        checks = [self._key(str(k), v, (*path, str(k)), used, exprs) for k, v in cond.items()]
        if len(checks) == 1:
            return checks[0]
        return lambda facts: all(check(facts) for check in checks)

    def _key(self, key: str, value: Any, path: Path, used: set[str], exprs: list[bool]) -> Check:
        if key in {"all", "any"}:
            if not isinstance(value, list) or not value:
                raise CompileError(path, f"`{key}` takes a non-empty list of conditions")
            parts = [self._node(v, (*path, i), used, exprs) for i, v in enumerate(value)]
            combine = all if key == "all" else any
            return lambda facts: combine(part(facts) for part in parts)
        if key == "not":
            inner = self._node(value, path, used, exprs)
            return lambda facts: not inner(facts)
        if key == "expr":
            exprs.append(True)
            return self._expr(value, path)
        head, _, rest = key.partition(".")
        if not rest:
            raise CompileError(path, f"unknown condition key {key!r}")
        if head in {"tenant", "model", "request"}:
            return _compile_match(_context_getter(head, rest, path), value, path)
        used.add(head)
        return self._findings(head, rest, value, path)

    def _findings(self, detector: str, rest: str, value: Any, path: Path) -> Check:
        if detector not in self._labels:
            declared = ", ".join(sorted(self._labels)) or "none"
            raise CompileError(
                path,
                f"detector {detector!r} is not declared under this policy's `detectors` "
                f"(declared: {declared})",
            )
        if rest in {"any", "all"}:
            return self._label_set(detector, rest, value, path)
        if rest == "count":
            compare = _compile_comparison(value, path)
            return lambda f: compare(sum(c for c, _ in f.findings.get(detector, {}).values()))
        label, _, tail = rest.partition(".")
        self._known(detector, [label], path)
        if tail == "count":
            compare = _compile_comparison(value, path)
            return lambda f: compare(_stat(f, detector, label)[0])
        if tail:
            raise CompileError(path, f"unknown finding key {rest!r}; use {label}.count")
        if isinstance(value, bool):
            return lambda f: (_stat(f, detector, label)[0] > 0) is value
        compare = _compile_comparison(value, path)
        return lambda f: compare(_stat(f, detector, label)[1])

    def _label_set(self, detector: str, how: str, value: Any, path: Path) -> Check:
        min_score = 0.0
        if isinstance(value, Mapping):
            if set(value) - {"labels", "min_score"} or "labels" not in value:
                raise CompileError(path, "takes {labels: [...] | '*', min_score: number}")
            min_score = _number(value.get("min_score", 0.0), (*path, "min_score"))
            value = value["labels"]
        return self._labels_of(detector, how, value, min_score, path)

    def _labels_of(
        self, detector: str, how: str, value: Any, min_score: float, path: Path
    ) -> Check:
        if value == "*":
            if how == "all":
                raise CompileError(path, "`all` needs a list of labels")
            return lambda f: any(m >= min_score for _, m in f.findings.get(detector, {}).values())
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise CompileError(path, "takes a non-empty list of labels, or '*'")
        self._known(detector, value, path)
        labels = tuple(value)
        combine = any if how == "any" else all
        return lambda f: combine(_found(f, detector, label, min_score) for label in labels)

    def _known(self, detector: str, labels: list[str], path: Path) -> None:
        known = self._labels[detector]
        if known is None:
            return
        for label in labels:
            if label not in known:
                names = ", ".join(sorted(known)[:20]) or "none"
                raise CompileError(
                    path, f"detector {detector!r} never reports {label!r} (it reports: {names})"
                )

    def _expr(self, source: Any, path: Path) -> Check:
        if not isinstance(source, str) or not source.strip():
            raise CompileError(path, "`expr` takes a CEL expression as a string")
        try:
            program = self._env.program(self._env.compile(source))
        except CELParseError as exc:
            column = getattr(exc, "column", None)
            first = str(exc).splitlines()[0] if str(exc) else "syntax error"
            raise CompileError(path, f"invalid CEL: {first}", column) from None
        _check_names(program, path)

        def check(facts: Facts) -> bool:
            try:
                result = program.evaluate(facts.cel())
            except CELEvalError as exc:
                raise ExpressionError(_cel_reason(exc)) from None
            if isinstance(result, CELEvalError):
                raise ExpressionError(_cel_reason(result))
            if not isinstance(result, BoolType):
                raise ExpressionError(f"the expression gave a {type(result).__name__}, not a bool")
            return bool(result)

        return check


def _always(_: Facts) -> bool:
    return True


def _stat(facts: Facts, detector: str, label: str) -> tuple[int, float]:
    return facts.findings.get(detector, {}).get(label, (0, 0.0))


def _found(facts: Facts, detector: str, label: str, min_score: float) -> bool:
    count, top = _stat(facts, detector, label)
    return count > 0 and top >= min_score


def _context_getter(head: str, rest: str, path: Path) -> Callable[[Facts], Any]:
    if head == "tenant":
        parts = rest.split(".")
        return lambda f: _dig(f.tenant.get(parts[0]), parts[1:]) if f.tenant else None
    if head == "model":
        if rest in _MODEL_KEYS:
            return lambda f: getattr(f.model, rest)
        term = rest.removeprefix("licence.")
        if rest.startswith("licence.") and term in _LICENCE_TERMS:
            return lambda f: getattr(f.model.licence, term)
        keys = sorted(_MODEL_KEYS) + [f"licence.{t}" for t in sorted(_LICENCE_TERMS)]
        raise CompileError(path, f"unknown model key {rest!r} (known: {', '.join(keys)})")
    if rest not in _REQUEST_KEYS:
        known = ", ".join(sorted(_REQUEST_KEYS))
        raise CompileError(path, f"unknown request key {rest!r} (known: {known})")
    return lambda f: f.request(rest)


def _dig(value: Any, parts: list[str]) -> Any:
    for part in parts:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps true apart from 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _compile_match(get: Callable[[Facts], Any], value: Any, path: Path) -> Check:
    if isinstance(value, list):
        options = tuple(value)
        return lambda f: any(_same(get(f), option) for option in options)
    if not isinstance(value, Mapping):
        return lambda f: _same(get(f), value)
    tests = [_match_op(str(op), arg, (*path, str(op))) for op, arg in value.items()]
    if not tests:
        raise CompileError(path, "an empty mapping matches nothing; give a value or operators")
    return lambda f: all(test(get(f)) for test in tests)


def _match_op(op: str, arg: Any, path: Path) -> Callable[[Any], bool]:
    if op in {"in", "not_in"}:
        if not isinstance(arg, list):
            raise CompileError(path, f"`{op}` takes a list")
        found: Callable[[Any], bool] = lambda v: any(_same(v, a) for a in arg)  # noqa: E731
        return found if op == "in" else (lambda v: not found(v))
    if op == "contains":
        return lambda v: _contains(v, arg)
    if op == "empty":
        if not isinstance(arg, bool):
            raise CompileError(path, "`empty` takes true or false")
        return lambda v: (
            (v is None or (isinstance(v, str | list | tuple | Mapping) and not v)) is arg
        )
    if op == "eq":
        return lambda v: _same(v, arg)
    if op == "ne":
        return lambda v: not _same(v, arg)
    return _numeric(op, arg, path)


def _contains(value: Any, item: Any) -> bool:
    if isinstance(value, str):
        return isinstance(item, str) and item in value
    if isinstance(value, list | tuple):
        return any(_same(v, item) for v in value)
    return False


def _compile_comparison(value: Any, path: Path) -> Callable[[float], bool]:
    if isinstance(value, Mapping):
        tests = [_numeric(str(op), arg, (*path, str(op))) for op, arg in value.items()]
        if not tests:
            raise CompileError(path, "give a number or operators (gt, gte, lt, lte, eq, ne)")
        return lambda v: all(test(v) for test in tests)
    number = _number(value, path)
    return lambda v: v == number


def _numeric(op: str, arg: Any, path: Path) -> Callable[[Any], bool]:
    if op in {"eq", "ne"}:
        number = _number(arg, path)
        return (lambda v: v == number) if op == "eq" else (lambda v: v != number)
    compare = _NUMERIC_OPS.get(op)
    if compare is None:
        raise CompileError(path, f"unknown operator {op!r}")
    number = _number(arg, path)
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and compare(v, number)


def _number(value: Any, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CompileError(path, f"expected a number, got {type(value).__name__}")
    return float(value)


def _activation(facts: Facts) -> dict[str, Any]:
    tenant = dict(facts.tenant.attributes, id=facts.tenant.id) if facts.tenant else {}
    lic = dataclasses.asdict(facts.model.licence)
    lic["restrictions"] = list(lic.get("restrictions", []))
    return {
        "tenant": tenant,
        "model": {
            "name": facts.model.name,
            "upstream": facts.model.upstream,
            "upstream_model": facts.model.upstream_model,
            "licence": lic,
        },
        "request": {key: facts.request(key) for key in sorted(_REQUEST_KEYS)},
        "findings": {
            det: {label: {"count": c, "max_score": m} for label, (c, m) in labels.items()}
            for det, labels in facts.findings.items()
        },
    }


def _check_names(program: Any, path: Path) -> None:
    """CEL resolves names at run time; try the expression once on empty facts so that a
    name guard never provides (a typo) fails the load, not every request."""
    empty = json_to_cel({name: {} for name in _CEL_NAMES})
    try:
        outcome = program.evaluate(empty)
    except CELEvalError as exc:
        outcome = exc
    if isinstance(outcome, CELEvalError) and "undeclared reference" in _text(outcome):
        raise CompileError(path, f"CEL: {_cel_reason(outcome)} (names: {', '.join(_CEL_NAMES)})")


def _text(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else str(exc)


def _cel_reason(exc: BaseException) -> str:
    """The first words of a CEL error: its full text dumps the whole activation, values
    included, so it must never reach a log."""
    text = _text(exc)
    return text.split(" (in activation", 1)[0][:200]

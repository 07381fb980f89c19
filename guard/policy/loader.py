"""From a directory of policy files to a checked, compiled bundle.

``read_source`` reads every ``*.yaml``/``*.yml`` file under the directory (sorted,
so the rule order is the file order) and names the bundle's version: a hash of the
file names and contents. ``Loader.check`` validates without loading any model:
schema, detector configs, conditions and expressions, labels, duplicate policy
names and rule ids; every problem names its file, line, column and rule.
``Loader.load`` then builds the detectors (reusing those whose settings did not
change since the last load) and returns the bundle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from guard.detectors.base import Detector, Direction
from guard.detectors.registry import DetectorRegistry
from guard.errors import ConfigError
from guard.policy.actions import Redactor
from guard.policy.conditions import CompileError, ConditionCompiler
from guard.policy.decision import Action
from guard.policy.engine import Bundle, CompiledPolicy, CompiledRule, globs
from guard.policy.schema import Policy

BUNDLED = Path(__file__).resolve().parents[2] / "policies"
_SUFFIXES = (".yaml", ".yml")
_MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int | None
    column: int | None
    where: str
    message: str

    def __str__(self) -> str:
        place = self.file + (f":{self.line}:{self.column}" if self.line else "")
        return (
            f"{place}: {self.where}: {self.message}" if self.where else f"{place}: {self.message}"
        )


class PolicyError(ConfigError):
    """A bundle that cannot be used; ``problems`` lists everything found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"invalid policy bundle: {self.problems[0]}{more}")


@dataclass(frozen=True, slots=True)
class Source:
    """The bundle's files as read: relative name -> text."""

    root: Path
    files: Mapping[str, str]
    version: str


def read_source(root: Path) -> Source:
    if not root.is_dir():
        raise PolicyError([Problem(str(root), None, None, "", "no such policy directory")])
    files: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.suffix in _SUFFIXES and p.is_file()):
        name = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in Path(name).parts):
            continue  # editors' and version control's hidden files
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise PolicyError([Problem(name, None, None, "", "file over 1 MiB")])
        try:
            files[name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError([Problem(name, None, None, "", f"cannot read: {exc}")]) from None
    return Source(root, files, version_of(files))


def version_of(files: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return "sha256:" + digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Parsed:
    file: str
    policy: Policy
    node: yaml.Node
    configs: Mapping[str, BaseModel]  # detector -> this policy's validated config


@dataclass(frozen=True, slots=True)
class Checked:
    source: Source
    parsed: tuple[Parsed, ...]
    compiled: tuple[CompiledPolicy, ...]
    configs: Mapping[str, tuple[BaseModel, ...]]  # detector -> every policy's config


@dataclass(frozen=True, slots=True)
class Loaded:
    checked: Checked
    bundle: Bundle
    keys: Mapping[str, str]  # detector -> what it was built from (guard's and policies' settings)

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def source(self) -> Source:
        return self.checked.source


class Loader:
    """Checks and loads bundles; reuses the detectors of the bundle in force whose
    settings did not change (a model loads once, not on every reload)."""

    def __init__(
        self,
        registry: DetectorRegistry,
        options: Mapping[str, Mapping[str, Any]],
        redactor: Redactor,
        timeout: float,
    ) -> None:
        self._registry = registry
        self._options = options
        self._redactor = redactor
        self._timeout = timeout
        self._built: dict[str, tuple[str, Detector]] = {}

    def check(self, source: Source) -> Checked:
        problems: list[Problem] = []
        parsed = [p for p in (self._parse(n, t, problems) for n, t in source.files.items()) if p]
        _unique_names(parsed, problems)
        configs: dict[str, list[BaseModel]] = {}
        for item in parsed:
            for name, config in item.configs.items():
                configs.setdefault(name, []).append(config)
        labels = {name: self._registry.entry(name).labels(cfgs) for name, cfgs in configs.items()}
        compiled = [_compile(item, labels, problems) for item in parsed]
        if problems:
            raise PolicyError(problems)
        frozen = {name: tuple(cfgs) for name, cfgs in configs.items()}
        return Checked(source, tuple(parsed), tuple(compiled), frozen)

    def load(self, source: Source) -> Loaded:
        checked = self.check(source)
        detectors: dict[str, Detector] = {}
        keys: dict[str, str] = {}
        for name, configs in checked.configs.items():
            keys[name] = key = _settings_key(self._options.get(name, {}), configs)
            previous = self._built.get(name)
            if previous is not None and previous[0] == key:
                detectors[name] = previous[1]
            else:
                detectors[name] = self._build(name, configs, checked)
        bundle = Bundle(source.version, checked.compiled, detectors, self._redactor, self._timeout)
        return Loaded(checked, bundle, keys)

    def adopt(self, loaded: Loaded) -> None:
        """The bundle went into force: its detectors are the ones the next load reuses
        (not those of a bundle that was turned away)."""
        detectors = loaded.bundle.detectors
        self._built = {name: (key, detectors[name]) for name, key in loaded.keys.items()}

    def _build(self, name: str, configs: Sequence[BaseModel], checked: Checked) -> Detector:
        try:
            return self._registry.build(name, self._options.get(name, {}), configs)
        except ConfigError as exc:
            first = next(p for p in checked.parsed if name in p.configs)
            line, column = _locate(first.node, ("detectors", name))
            raise PolicyError(
                [Problem(first.file, line, column, f"detectors.{name}", str(exc))]
            ) from None

    def _parse(self, name: str, text: str, problems: list[Problem]) -> Parsed | None:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
            problems.append(Problem(name, line, column, "", f"invalid YAML: {_yaml_reason(exc)}"))
            return None
        if node is None or not isinstance(data, dict):
            problems.append(Problem(name, 1, 1, "", "a policy file holds one mapping"))
            return None
        try:
            policy = Policy.model_validate(data)
        except ValidationError as exc:
            problems.extend(_validation_problems(name, node, exc, ()))
            return None
        configs = self._configs(name, node, policy, problems)
        return Parsed(name, policy, node, configs)

    def _configs(
        self, name: str, node: yaml.Node, policy: Policy, problems: list[Problem]
    ) -> dict[str, BaseModel]:
        configs: dict[str, BaseModel] = {}
        for detector, section in policy.detectors.items():
            path: tuple[str | int, ...] = ("detectors", detector)
            try:
                entry = self._registry.entry(detector)
            except ConfigError as exc:
                problems.append(_problem(name, node, path, str(exc)))
                continue
            try:
                configs[detector] = entry.config.model_validate(section or {})
            except ValidationError as exc:
                problems.extend(_validation_problems(name, node, exc, path))
        return configs


def _compile(
    item: Parsed, labels: Mapping[str, frozenset[str] | None], problems: list[Problem]
) -> CompiledPolicy:
    policy = item.policy
    declared = {name: labels.get(name) for name in item.configs}
    compiler = ConditionCompiler(declared)
    rules: list[CompiledRule] = []
    for index, rule in enumerate(policy.rules):
        try:
            compiled = compiler.compile(rule.when)
        except CompileError as exc:
            path = ("rules", index, "when", *exc.path)
            line, column = _locate(item.node, path)
            where = f"rule {rule.id}: when" + "".join(f".{p}" for p in exc.path)
            where_col = f" (at column {exc.column} of the expression)" if exc.column else ""
            problems.append(Problem(item.file, line, column, where, exc.message + where_col))
            continue
        needs = frozenset(item.configs) if compiled.uses_expr else compiled.detectors
        rules.append(
            CompiledRule(
                id=rule.id,
                action=Action[rule.action.upper()],
                monitor=policy.mode == "monitor",
                check=compiled.check,
                needs=needs,
                fail_closed=rule.on_error == "block",
                status=rule.status,
                message=rule.message,
                redact=dict(rule.redact or {}),
                directions=_pinned(rule.when),
            )
        )
    scope = policy.scope
    directions = list(Direction) if scope.direction == "both" else [Direction(scope.direction)]
    return CompiledPolicy(
        name=policy.name,
        directions=frozenset(directions),
        tenants=frozenset(scope.tenants),
        models=globs(scope.models),
        routes=globs(scope.routes),
        detectors=tuple(item.configs),
        rules=tuple(rules),
    )


def _pinned(when: Mapping[str, Any] | None) -> frozenset[Direction]:
    """The directions a rule can match in: its top-level ``request.direction``, where it
    names them. A rule pinned to input is not in the output's plan, so its detectors do
    not run there and cannot fail it there."""
    value = (when or {}).get("request.direction")
    named = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if named is None or not all(isinstance(v, str) for v in named):
        return frozenset(Direction)
    return frozenset(d for d in Direction if d.value in named)


def _unique_names(parsed: Sequence[Parsed], problems: list[Problem]) -> None:
    policies: dict[str, str] = {}
    rules: dict[str, str] = {}
    for item in parsed:
        first = policies.setdefault(item.policy.name, item.file)
        if first != item.file:
            message = f"policy name {item.policy.name!r} is already used in {first}"
            problems.append(_problem(item.file, item.node, ("name",), message))
        for index, rule in enumerate(item.policy.rules):
            if rule.id in rules:
                message = f"duplicate rule id {rule.id!r} (first in {rules[rule.id]})"
                problems.append(_problem(item.file, item.node, ("rules", index, "id"), message))
            rules.setdefault(rule.id, item.file)


def _validation_problems(
    file: str, node: yaml.Node, exc: ValidationError, prefix: tuple[str | int, ...]
) -> Iterator[Problem]:
    for error in exc.errors(include_url=False, include_input=False):
        loc = (*prefix, *error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        yield _problem(file, node, loc, message)


def _problem(file: str, node: yaml.Node, loc: tuple[str | int, ...], message: str) -> Problem:
    line, column = _locate(node, loc)
    return Problem(file, line, column, ".".join(str(p) for p in loc), message)


def _locate(node: yaml.Node, loc: Sequence[str | int]) -> tuple[int | None, int | None]:
    """The line and column of the deepest node along ``loc`` (1-based)."""
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if 0 <= part < len(node.value) else None
        if child is None:
            break
        node = child
    return node.start_mark.line + 1, node.start_mark.column + 1


def _settings_key(options: Mapping[str, Any], configs: Sequence[BaseModel]) -> str:
    """What a detector is built from: guard's options and the distinct policy configs
    (one more policy needing a model with no settings of its own must not reload it)."""
    dumps = {json.dumps(c.model_dump(mode="json"), sort_keys=True) for c in configs}
    return json.dumps({"options": options, "configs": sorted(dumps)}, sort_keys=True, default=str)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem) if problem else type(exc).__name__

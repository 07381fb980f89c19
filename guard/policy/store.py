"""The bundle in force, and hot reload.

``current`` is read once per exchange, which keeps it to the end: a reload builds,
checks and tests a whole new bundle off to the side, then replaces ``current`` in
one assignment. A bundle that fails its checks or its own tests is turned away and
the running one stays; the reason goes to the log and to ``/admin/policies``.
Every bundle put in force, and every one turned away, is an audit event; a loaded
bundle's event holds its files, so the policy behind any decision can be shown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import watchfiles

from guard.audit.events import AuditEvent, policy_event
from guard.errors import ConfigError
from guard.policy.engine import Guardrails
from guard.policy.loader import Loaded, Loader, PolicyError, Problem, Source, read_source
from guard.policy.testing import failed_problems, run_tests
from guard.registry.cards import ModelCard
from guard.settings import PolicySettings

log = logging.getLogger(__name__)
_PROBLEMS_KEPT = 20


class EventSink(Protocol):
    def note(self, event: AuditEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    """The last load or reload: when, why, and how it went."""

    at: str
    reason: str
    outcome: str  # loaded | unchanged | rejected
    version: str | None
    problems: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "reason": self.reason,
            "outcome": self.outcome,
            "version": self.version,
            "problems": list(self.problems),
        }


@dataclass(slots=True)
class _State:
    loaded: int = 0
    rejected: int = 0
    unchanged: int = 0
    watching: bool = False
    loaded_at: str = ""
    last: Attempt | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class PolicyStore:
    """Holds the guardrails in force: a loaded bundle, or a fixed engine given in code."""

    def __init__(
        self,
        current: Guardrails,
        *,
        loader: Loader | None = None,
        root: Path | None = None,
        settings: PolicySettings | None = None,
        models: Mapping[str, ModelCard] | None = None,
        audit: EventSink | None = None,
    ) -> None:
        self.current = current
        self.loaded: Loaded | None = None
        self._loader = loader
        self._root = root
        self._settings = settings or PolicySettings()
        self._models = dict(models or {})
        self._audit = audit
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._state = _State()

    @classmethod
    async def open(
        cls,
        loader: Loader,
        root: Path,
        settings: PolicySettings,
        models: Mapping[str, ModelCard],
        audit: EventSink | None,
    ) -> PolicyStore:
        """Load the bundle at start; a bundle that cannot be used stops the start."""
        started = time.time()
        source = await asyncio.to_thread(read_source, root)
        loaded = await asyncio.to_thread(loader.load, source)
        problems = await _test(loaded, settings, models)
        if problems:
            raise PolicyError(problems)
        store = cls(
            loaded.bundle, loader=loader, root=root, settings=settings, models=models, audit=audit
        )
        store._put_in_force(loaded, "start", started)
        return store

    # -- state ---------------------------------------------------------------------------

    @property
    def version(self) -> str:
        return self.current.version

    def counts(self) -> dict[str, Any]:
        """For /metrics: loads by outcome, and the version in force."""
        state = self._state
        return {
            "loaded": state.loaded,
            "rejected": state.rejected,
            "unchanged": state.unchanged,
            "version": self.version,
        }

    def summary(self) -> dict[str, Any]:
        """For /readyz: the version in force and how the last load went."""
        last = self._state.last
        return {
            "version": self.version,
            "loaded_at": self._state.loaded_at or None,
            "last_attempt": last.outcome if last else None,
        }

    def status(self) -> dict[str, Any]:
        state = self._state
        out: dict[str, Any] = {
            "version": self.version,
            "source": str(self._root) if self._root else None,
            "loaded_at": state.loaded_at or None,
            "watching": state.watching,
            "reloads": state.loaded,
            "rejected": state.rejected,
            "last_attempt": state.last.as_json() if state.last else None,
            "policies": [],
        }
        if self.loaded is not None:
            out["policies"] = [_describe(item) for item in self.loaded.checked.parsed]
        return out

    # -- reload --------------------------------------------------------------------------

    async def reload(self, reason: str) -> Attempt:
        """Load, check and test the directory's bundle; put it in force if it passes."""
        if self._loader is None or self._root is None:
            raise ConfigError("this guard runs a fixed policy engine; there is nothing to reload")
        async with self._lock:
            started = time.time()
            try:
                source = await asyncio.to_thread(read_source, self._root)
                if source.version == self.version:
                    self._state.unchanged += 1
                    return self._attempt(reason, "unchanged", source.version)
                loaded = await self._load(source)
            except PolicyError as exc:
                return self._reject(reason, exc.problems, started)
            except Exception as exc:  # noqa: BLE001  # a broken reload never stops serving
                problem = Problem(str(self._root), None, None, "", f"{type(exc).__name__}")
                return self._reject(reason, [problem], started)
            self._put_in_force(loaded, reason, started)
            return self._state.last or self._attempt(reason, "loaded", loaded.version)

    async def _load(self, source: Source) -> Loaded:
        assert self._loader is not None  # noqa: S101  # checked by reload
        loaded = await asyncio.to_thread(self._loader.load, source)
        problems = await _test(loaded, self._settings, self._models)
        if problems:
            raise PolicyError(problems)
        return loaded

    def _put_in_force(self, loaded: Loaded, reason: str, started: float) -> None:
        previous = None if self.loaded is None else self.version
        self.current, self.loaded = loaded.bundle, loaded
        if self._loader is not None:
            self._loader.adopt(loaded)
        self._state.loaded += 1
        self._state.loaded_at = _now()
        self._attempt(reason, "loaded", loaded.version)
        log.info(
            "policy: bundle %s in force (%s%s; %d policies)",
            loaded.version,
            reason,
            f"; was {previous}" if previous else "",
            len(loaded.checked.parsed),
        )
        detail = {
            "source": str(loaded.source.root),
            "files": dict(loaded.source.files),
            "policies": [_describe(item) for item in loaded.checked.parsed],
            "previous": previous,
        }
        self._note(policy_event(loaded.version, "loaded", reason, detail, started))

    def _reject(self, reason: str, problems: list[Problem], started: float) -> Attempt:
        self._state.rejected += 1
        texts = tuple(str(p) for p in problems[:_PROBLEMS_KEPT])
        log.error(
            "policy: reload (%s) rejected, bundle %s stays in force: %s",
            reason,
            self.version,
            "; ".join(texts),
        )
        detail = {"source": str(self._root), "problems": list(texts), "kept": self.version}
        self._note(policy_event(self.version, "rejected", reason, detail, started))
        return self._attempt(reason, "rejected", None, texts)

    def _attempt(
        self, reason: str, outcome: str, version: str | None, problems: tuple[str, ...] = ()
    ) -> Attempt:
        self._state.last = Attempt(_now(), reason, outcome, version, problems)
        return self._state.last

    def _note(self, event: AuditEvent) -> None:
        if self._audit is not None:
            self._audit.note(event)

    # -- the file watcher ----------------------------------------------------------------

    def start_watching(self) -> None:
        if self._root is None or not self._settings.watch:
            return
        task = asyncio.get_running_loop().create_task(self._watch(), name="guard-policy-watch")
        self._state.tasks.add(task)
        task.add_done_callback(self._state.tasks.discard)

    async def _watch(self) -> None:
        assert self._root is not None  # noqa: S101  # checked by start_watching
        self._state.watching = True
        debounce = int(self._settings.watch_debounce * 1000)
        try:
            async for _ in watchfiles.awatch(
                self._root,
                stop_event=self._stop,
                debounce=debounce,
                step=min(50, max(debounce, 1)),
                # Every change, not just *.yaml: Kubernetes swaps a ConfigMap's files
                # in by replacing a hidden `..data` symlink. A change that leaves the
                # files as they were reloads nothing (the version is a content hash).
                watch_filter=watchfiles.DefaultFilter(),
                recursive=True,
            ):
                await self.reload("watch")
        except Exception as exc:  # noqa: BLE001  # the watcher dying must not take guard down
            log.error(  # noqa: TRY400  # the type is enough; a traceback adds nothing here
                "policy: the file watcher stopped (%s); reload with the admin API",
                type(exc).__name__,
            )
        finally:
            self._state.watching = False

    async def aclose(self) -> None:
        """Stop watching, then let the detectors in force go (guard is stopping)."""
        self._stop.set()
        for task in list(self._state.tasks):
            try:
                await asyncio.wait_for(task, 2.0)
            except TimeoutError:
                task.cancel()
        self.current.close()


async def _test(
    loaded: Loaded, settings: PolicySettings, models: Mapping[str, ModelCard]
) -> list[Problem]:
    if not settings.test_on_load:
        return []
    return failed_problems(await run_tests(loaded, models))


def _describe(item: Any) -> dict[str, Any]:
    policy = item.policy
    return {
        "file": item.file,
        "name": policy.name,
        "mode": policy.mode,
        "scope": policy.scope.model_dump(),
        "detectors": sorted(policy.detectors),
        "rules": [rule.id for rule in policy.rules],
        "tests": len(policy.tests),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")

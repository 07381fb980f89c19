"""Hash chains over audit events: sealing as they are recorded, and verifying later.

Each recording process keeps one chain. An event's hash covers its canonical
encoding (msgspec JSON, keys sorted, ``seq`` and ``hash`` blanked, an empty
``detector_versions`` left out) including the previous event's hash, so changing,
deleting or inserting an event breaks a link that ``verify`` names. With a key
(``audit.chain_key_env``) the hash is an HMAC-SHA256, and nobody without the key
can forge a consistent chain.

The canonical encoding, for checking an export with other tools: take the event's
JSON object as exported, set ``seq`` to 0 and ``hash`` to "", remove
``detector_versions`` if it is empty (``{}``), and encode it with keys sorted and no
whitespace; times are RFC 3339 in UTC with a ``Z``. An empty ``detector_versions``
is left out because events sealed before the field existed were hashed without it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec

from guard.audit.events import AuditEvent
from guard.db.repository import AuditRepository, ChainInfo

ProblemKind = Literal["changed", "deleted", "inserted"]


def genesis(chain_id: str) -> str:
    """The ``prev_hash`` of a chain's first event."""
    return hashlib.sha256(f"guard-audit-chain:{chain_id}".encode()).hexdigest()


def canonical(event: AuditEvent) -> bytes:
    bare = msgspec.structs.replace(event, seq=0, hash="")
    if bare.detector_versions:
        return msgspec.json.encode(bare, order="sorted")
    # Encoded as it was before the field existed, so older events keep verifying.
    data = msgspec.to_builtins(bare)
    del data["detector_versions"]
    return msgspec.json.encode(data, order="sorted")


def digest(event: AuditEvent, key: bytes | None) -> str:
    data = canonical(event)
    if key:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


class Sealer:
    """Links events into one chain in the order they are sealed (one thread only)."""

    def __init__(self, chain_id: str, key: bytes | None) -> None:
        self.chain_id = chain_id
        self.key = key
        self.seq = 0
        self.head = genesis(chain_id)

    def seal(self, event: AuditEvent) -> AuditEvent:
        self.seq += 1
        linked = msgspec.structs.replace(
            event, chain_id=self.chain_id, seq=self.seq, prev_hash=self.head, hash=""
        )
        self.head = digest(linked, self.key)
        return msgspec.structs.replace(linked, hash=self.head)


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    event_id: str | None
    seq: int | None
    detail: str

    def describe(self) -> str:
        where = f"event {self.event_id} (seq {self.seq})" if self.event_id else "the chain"
        return f"{self.kind}: {where}: {self.detail}"


@dataclass(slots=True)
class Walk:
    """Checks a chain's events in ``seq`` order, starting from a trusted hash."""

    key: bytes | None
    expected: str
    count: int = 0
    last: AuditEvent | None = None
    _before_last: str | None = None

    def check(self, events: Iterable[AuditEvent]) -> Problem | None:
        rows = _Peekable(iter(events))
        for row in rows:
            if row.prev_hash != self.expected:
                return self._broken_link(row, rows.peek())
            if digest(row, self.key) != row.hash:
                following = rows.peek()
                if following is not None and following.prev_hash == self.expected:
                    return Problem("inserted", row.id, row.seq, "the next event links past it")
                return Problem("changed", row.id, row.seq, "its content does not match its hash")
            self._before_last, self.expected, self.last = self.expected, row.hash, row
            self.count += 1
        return None

    def _broken_link(self, row: AuditEvent, following: AuditEvent | None) -> Problem:
        if self.last is not None and row.prev_hash == self._before_last:
            last = self.last
            return Problem("inserted", last.id, last.seq, "the next event links past it")
        if following is not None and following.prev_hash == self.expected:
            return Problem("inserted", row.id, row.seq, "the next event links past it")
        return Problem(
            "deleted",
            row.id,
            row.seq,
            "events are missing before it: it links to a hash no event before it has",
        )

    def check_head(self, head_seq: int, head_hash: str) -> Problem | None:
        """After the walk: the last event must be the head the chain recorded."""
        if self.expected == head_hash:
            return None
        last = self.last
        if last is None or last.seq < head_seq:
            after = f"after event {last.id} (seq {last.seq})" if last else "from the start"
            return Problem(
                "deleted",
                last.id if last else None,
                last.seq if last else None,
                f"events up to seq {head_seq} are missing {after}",
            )
        return Problem("changed", None, head_seq, "the chain's head does not match its events")


class _Peekable(Iterator[AuditEvent]):
    def __init__(self, it: Iterator[AuditEvent]) -> None:
        self._it = it
        self._next: AuditEvent | None = None

    def __next__(self) -> AuditEvent:
        if self._next is not None:
            item, self._next = self._next, None
            return item
        return next(self._it)

    def peek(self) -> AuditEvent | None:
        if self._next is None:
            self._next = next(self._it, None)
        return self._next


@dataclass(frozen=True, slots=True)
class ChainReport:
    chain_id: str
    instance: str
    checked: int
    problem: Problem | None


def verify_trail(
    repo: AuditRepository, key: bytes | None, since: datetime | None = None
) -> list[ChainReport]:
    """Walk every chain in the database; each report names the first problem found."""
    reports = []
    for chain in repo.chains():
        if chain.keyed and key is None:
            missing = Problem("changed", None, None, "keyed chain: set audit.chain_key_env")
            reports.append(ChainReport(chain.id, chain.instance, 0, missing))
            continue
        walk, after = _start(repo, chain, key, since)
        problem = _walk_to_head(repo, chain, walk, after) if walk else None
        reports.append(ChainReport(chain.id, chain.instance, walk.count if walk else 0, problem))
    return reports


def verify_events(events: Iterable[AuditEvent], key: bytes | None) -> list[ChainReport]:
    """Check an export: each chain's events must link up from its first one."""
    by_chain: dict[str, list[AuditEvent]] = {}
    for event in events:
        by_chain.setdefault(event.chain_id, []).append(event)
    reports = []
    for chain_id, chained in by_chain.items():
        chained.sort(key=lambda e: e.seq)
        walk = Walk(key, chained[0].prev_hash)
        problem = walk.check(chained)
        reports.append(ChainReport(chain_id, "", walk.count, problem))
    return reports


def _start(
    repo: AuditRepository, chain: ChainInfo, key: bytes | None, since: datetime | None
) -> tuple[Walk | None, int]:
    if since is None:
        return Walk(key, chain.anchor_hash or genesis(chain.id)), chain.anchor_seq
    first = repo.first_since(chain.id, since)
    if first is None:
        return None, 0
    return Walk(key, first.prev_hash), first.seq - 1


def _walk_to_head(
    repo: AuditRepository, chain: ChainInfo, walk: Walk, after: int
) -> Problem | None:
    """Walk up to the recorded head; rows beyond it are checked against a fresh read
    of the head, since a live recorder may have moved it meanwhile."""
    while True:
        problem = walk.check(repo.chain_events(chain.id, after, up_to_seq=chain.head_seq))
        problem = problem or walk.check_head(chain.head_seq, chain.head_hash)
        if problem is not None:
            return problem
        beyond = next(repo.chain_events(chain.id, chain.head_seq, batch=1), None)
        if beyond is None:
            return None
        fresh = repo.chain(chain.id)
        if fresh is None or beyond.seq > fresh.head_seq:
            return Problem("inserted", beyond.id, beyond.seq, "it lies beyond the chain's head")
        after, chain = chain.head_seq, fresh

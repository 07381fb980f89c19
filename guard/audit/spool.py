"""The spool: sealed events wait here, on disk, while the database is unreachable.

One append-only file per chain (``<chain id>.spool``): a header line naming the
chain, then one JSON line per event, appended in batches and fsynced before the
recorder counts them as kept. ``<chain id>.offset`` says how far replay has got;
the database ignores events it already holds, so a crash between a replayed batch
and its offset update replays that batch again without duplicating it.

A live process holds an exclusive lock on its spool. A spool nobody holds was
left by a process that died (SIGKILL, power cut): the next recorder that starts
with the same spool directory replays and removes it.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgspec

from guard.audit.events import AuditEvent
from guard.db.repository import ChainInfo

log = logging.getLogger(__name__)
_OFFSET_WIDTH = 20
_READ_CHUNK = 4 * 1024 * 1024


class SpoolFull(OSError):
    """The spool reached ``audit.spool_max_bytes``."""


class _Header(msgspec.Struct, frozen=True):
    chain: str
    instance: str
    started_at: datetime
    keyed: bool


class Spool:
    def __init__(self, directory: Path, chain: ChainInfo, max_bytes: int) -> None:
        self.directory = directory
        self.chain = chain
        self.max_bytes = max_bytes
        self.path = directory / f"{chain.id}.spool"
        self._offset_path = directory / f"{chain.id}.offset"
        self._fd: int | None = None
        self._size = 0
        self._offset = 0

    # -- writing (the owning recorder) ------------------------------------------

    def append(self, events: list[AuditEvent]) -> None:
        """Write and fsync; on any failure the file is as it was and OSError is raised."""
        fd = self._open()
        data = b"".join(msgspec.json.encode(ev) + b"\n" for ev in events)
        if self._size + len(data) > self.max_bytes:
            raise SpoolFull(f"the spool {self.path} is full ({self._size} bytes)")
        try:
            os.pwrite(fd, data, self._size)
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, self._size)
            raise
        self._size += len(data)

    @property
    def pending(self) -> bool:
        return self._fd is not None and self._offset < self._size

    @property
    def size(self) -> int:
        return self._size - self._offset if self._fd is not None else 0

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        self.directory.mkdir(parents=True, exist_ok=True)
        # Locked and given its header under a name no one adopts, then renamed into place.
        partial = self.path.with_suffix(".partial")
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            header = msgspec.json.encode(
                _Header(self.chain.id, self.chain.instance, self.chain.started_at, self.chain.keyed)
            )
            os.pwrite(fd, header + b"\n", 0)
            os.fsync(fd)
            partial.rename(self.path)
            _fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            raise
        self._fd, self._size = fd, len(header) + 1
        self._set_offset(self._size)
        return fd

    # -- replaying ----------------------------------------------------------------

    def read(self, limit: int) -> tuple[list[AuditEvent], int]:
        """Up to ``limit`` events from the replay offset, and the offset after them."""
        if self._fd is None:
            return [], self._offset
        remaining = self._size - self._offset
        chunk = min(remaining, _READ_CHUNK)
        while True:
            data = os.pread(self._fd, chunk, self._offset)
            if b"\n" in data or chunk >= remaining:
                break
            chunk = min(remaining, chunk * 2)  # one event longer than a chunk
        events: list[AuditEvent] = []
        end = 0
        while len(events) < limit:
            newline = data.find(b"\n", end)
            if newline < 0:
                break
            events.append(msgspec.json.decode(data[end:newline], type=AuditEvent))
            end = newline + 1
        return events, self._offset + end

    def advance(self, offset: int) -> None:
        """Replay got to ``offset``; once it reaches the end, the spool starts over."""
        if offset >= self._size and self._fd is not None:
            header_end = self._header_end()
            os.ftruncate(self._fd, header_end)
            os.fsync(self._fd)
            self._size = header_end
            offset = header_end
        self._set_offset(offset)

    def _header_end(self) -> int:
        assert self._fd is not None  # noqa: S101  # only called on an open spool
        return os.pread(self._fd, 64 * 1024, 0).index(b"\n") + 1

    def _set_offset(self, offset: int) -> None:
        self._offset = offset
        text = str(offset).rjust(_OFFSET_WIDTH).encode() + b"\n"
        fd = os.open(self._offset_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, text, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self._offset_path.unlink(missing_ok=True)

    # -- orphans ------------------------------------------------------------------

    @classmethod
    def orphans(cls, directory: Path, max_bytes: int) -> Iterator[Spool]:
        """Spools left by processes that are gone, locked for replay by this one."""
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.spool")):
            spool = cls._adopt(path, max_bytes)
            if spool is not None:
                yield spool

    @classmethod
    def _adopt(cls, path: Path, max_bytes: int) -> Spool | None:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a live process owns it
            return None
        first = os.pread(fd, 64 * 1024, 0)
        if b"\n" not in first:  # died before the header was written: nothing in it
            os.close(fd)
            path.unlink(missing_ok=True)
            return None
        header = msgspec.json.decode(first[: first.index(b"\n")], type=_Header)
        chain = ChainInfo(header.chain, header.instance, header.started_at, header.keyed)
        spool = cls(path.parent, chain, max_bytes)
        spool._fd, spool._size = fd, os.fstat(fd).st_size
        spool._offset = spool._read_offset(len(first[: first.index(b"\n")]) + 1)
        return spool

    def _read_offset(self, default: int) -> int:
        try:
            return max(default, int(self._offset_path.read_text().strip() or default))
        except (FileNotFoundError, ValueError):
            return default


def dead_letter(path: Path, event: AuditEvent) -> None:
    """Set aside an event the database refused, so it is never silently gone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as file:
        file.write(msgspec.json.encode(event) + b"\n")
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

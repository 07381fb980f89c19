"""What every benchmark's command line shares: progress lines, a clean exit on
SIGTERM (so that the servers a run started are stopped), and package versions for
the report's header."""

from __future__ import annotations

import sys
from importlib import metadata
from types import FrameType


def log(message: str) -> None:
    """Progress goes to stderr, so that stdout is the report alone."""
    print(message, file=sys.stderr, flush=True)


def on_sigterm(signum: int, _frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit: the run's finally blocks stop what it started."""
    raise SystemExit(128 + signum)


def version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "-"


def verdict(ok: bool, text: str) -> str:
    """A summary line held to a floor."""
    return f"  [{'PASS' if ok else 'FAIL'}] {text}"

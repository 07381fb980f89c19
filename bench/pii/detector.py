"""The ``pii`` detector in process: built as guard builds it for the bundled policy,
timed call by call, and profiled.

Only ``detector.scan`` is timed: what guard runs per text (inline up to 4 KB, in a worker
thread above that; the thread hop is not counted here). The detector keeps the findings
of texts it has scanned (and its phone recognizer libphonenumber's verdicts), so a scan
is timed on a text it has not seen: each call gets its own rendering of a
``texts.Template``, all written before the clock starts. The same text scanned again is
timed apart: the cached lookup a resent conversation costs.
"""

from __future__ import annotations

import cProfile
import functools
import gc
import pstats
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from guard.detectors.pii.config import PiiConfig, PiiOptions
from guard.detectors.pii.detector import PiiDetector
from guard.detectors.pii.recognizers import pattern_recognizers
from guard.detectors.registry import DetectorRegistry

POLICY = Path(__file__).resolve().parents[2] / "policies" / "pii.yaml"
WARMUP_CALLS = 20


def _config() -> PiiConfig:
    section = yaml.safe_load(POLICY.read_text())["detectors"]["pii"]
    return PiiConfig.model_validate(section)


def build() -> PiiDetector:
    """The detector for the bundled pii policy, with guard's default settings (no NER)."""
    detector = DetectorRegistry.builtin().build("pii", {}, [_config()])
    if not isinstance(detector, PiiDetector):
        raise TypeError(f"expected PiiDetector, got {type(detector).__name__}")
    return detector


def found(detector: PiiDetector, text: str) -> Counter[str]:
    """Findings by label."""
    return Counter(f.label for f in detector.scan([text]))


@dataclass(frozen=True)
class Timing:
    name: str
    chars: int
    found: Counter[str]
    call_ms: list[float]  # each call, in order
    repeated: bool  # the same text every call (cache hits), else a new text every call
    evicted: bool = False  # the CPU's caches evicted before each call (not timed)


class Evictor:
    """Pushes the detector's code and data out of the CPU's caches, as a proxy's own
    work between two scans does: writes a buffer larger than a core's L2 cache, a cache
    line at a time, and reads as many Python objects as a busy heap holds."""

    BUFFER_BYTES = 8 * 1024 * 1024
    LINE_BYTES = 64
    OBJECTS = 20_000

    def __init__(self) -> None:
        self._buffer = bytearray(self.BUFFER_BYTES)
        self._lines = len(range(0, self.BUFFER_BYTES, self.LINE_BYTES))
        self._objects = [list(range(16)) for _ in range(self.OBJECTS)]
        self._round = 0

    def __call__(self) -> None:
        self._round = (self._round + 1) % 256
        self._buffer[:: self.LINE_BYTES] = bytes([self._round]) * self._lines
        sum(item[self._round % 16] for item in self._objects)


def time_texts(
    detector: PiiDetector, name: str, texts: Sequence[str], *, evict: bool = False
) -> Timing:
    """One scan per text, each timed alone, the first ``WARMUP_CALLS`` not counted; GC
    stays on, as in guard, so its pauses are in the tail. Texts that are all different
    time scans; one text over and over times the detector's cached lookup. With
    ``evict``, the CPU's caches are evicted before each call (``Evictor``)."""
    if len(texts) <= WARMUP_CALLS:
        raise ValueError(f"{name}: {len(texts)} texts leave none after the warm-up")
    call_ms = each_ms(
        lambda text: detector.scan([text]), texts, before=Evictor() if evict else None
    )
    repeated = len(set(texts)) == 1
    if not repeated and len(set(texts)) != len(texts):
        raise ValueError(f"{name}: texts must be all different or all the same")
    return Timing(name, len(texts[0]), found(detector, texts[-1]), call_ms, repeated, evict)


def each_ms(
    call: Callable[[str], object],
    texts: Sequence[str],
    before: Callable[[], object] | None = None,
) -> list[float]:
    """``call`` on each text, each timed alone in ms, after a warm-up on the first
    ``WARMUP_CALLS`` texts and a collection; ``before`` runs, untimed, before each."""
    for text in texts[:WARMUP_CALLS]:
        call(text)
    gc.collect()
    clock = time.perf_counter
    out: list[float] = []
    for text in texts[WARMUP_CALLS:]:
        if before is not None:
            before()
        started = clock()
        call(text)
        out.append((clock() - started) * 1000)
    return out


@dataclass(frozen=True)
class Entry:
    """One function's row in a profile."""

    where: str
    calls: str  # "primitive/total" where they differ, as pstats prints it
    tottime_s: float
    cumtime_s: float


def profile(detector: PiiDetector, texts: Sequence[str], top: int) -> tuple[float, list[Entry]]:
    """cProfile over scans of ``texts`` (all different, so that every one is scanned),
    after ``WARMUP_CALLS`` of them unprofiled: the total seconds under the profiler and
    the ``top`` functions by their own time (callees excluded)."""
    for text in texts[:WARMUP_CALLS]:
        detector.scan([text])
    profiler = cProfile.Profile()
    profiler.enable()
    for text in texts[WARMUP_CALLS:]:
        detector.scan([text])
    profiler.disable()
    stats = pstats.Stats(profiler)
    # pstats keeps its rows in attributes typeshed leaves out: func -> (cc, nc, tt, ct, callers)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    raw = stats.stats  # type: ignore[attr-defined]
    total_s: float = stats.total_tt  # type: ignore[attr-defined]
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    entries = [Entry(_where(f), _calls(cc, nc), tt, ct) for f, (cc, nc, tt, ct, _) in rows]
    return total_s, entries


def _calls(primitive: int, total: int) -> str:
    return f"{total}" if primitive == total else f"{total}/{primitive}"


def _where(func: tuple[str, int, str]) -> str:
    """``package/module.py:line(function)``, the path cut after site-packages or the
    repository, so the rows stay readable."""
    path, line, name = func
    if path == "~":  # a builtin
        return name
    for marker in ("site-packages/", f"{POLICY.parents[1]}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{line}({name})"


@dataclass(frozen=True)
class Part:
    """One recognizer of the detector, timed alone."""

    name: str
    entities: list[str]
    median_ms: float


def per_recognizer(texts: Sequence[str]) -> list[Part]:
    """Each recognizer the detector runs, timed alone on ``texts`` (one call each, all
    different, so the phone recognizer's verdicts are not cached): where a scan's time
    goes, which the profile shows by function, not by recognizer. They are rebuilt with
    guard's builder from the same settings, so they are the detector's recognizers
    without reaching into it; context words, thresholds and overlaps (the detector's own
    work around them) are left out."""
    config = _config()
    thresholds = config.thresholds()
    recognizers = pattern_recognizers(thresholds, PiiOptions().phone_regions, config.recognizers)
    parts = []
    for rec in recognizers:
        entities = [e for e in rec.supported_entities if e in thresholds]
        # Pattern recognizers need no NLP artifacts; the detector passes None too.
        analyze = functools.partial(rec.analyze, entities=entities, nlp_artifacts=None)  # type: ignore[arg-type]
        median = statistics.median(each_ms(analyze, texts))
        parts.append(Part(type(rec).__name__, entities, median))
    return sorted(parts, key=lambda p: p.median_ms, reverse=True)

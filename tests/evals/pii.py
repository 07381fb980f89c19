"""Accuracy of the ``pii`` detector's pattern types on a generated, labelled set.

    python -m tests.evals.pii [--n 2000] [--seed 7] [--jsonl PATH] [--misses 5]

The detector is built the way guard builds it, with the entities and thresholds
of the bundled policy ``policies/pii.yaml`` (less PERSON, which needs an NER
model), so the numbers are those of what ships. The set comes from
``tests.evals.pii_set`` (or a JSONL file it wrote).

Scoring: a finding is a true positive when its label is the labelled one and it
covers at least half of the labelled span; each labelled span and each finding
counts once. Every other finding is a false positive (look-alikes included), and
every labelled span no finding covers is a false negative. Exit status 1 when a
type's precision or recall is below 0.95.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from guard.detectors.pii.config import PiiConfig
from guard.detectors.registry import DetectorRegistry
from tests.evals.pii_set import LABELS, Example, Span, generate, read_jsonl

POLICY = Path(__file__).resolve().parents[2] / "policies" / "pii.yaml"
BAR = 0.95
MIN_OVERLAP = 0.5
# Needs an NER model; the eval measures the pattern recognizers.
NOT_MEASURED = frozenset({"PERSON"})

Predict = Callable[[str], list[Span]]


def policy_thresholds(path: Path = POLICY) -> dict[str, float]:
    """The bundled policy's pii entities and thresholds, without those not measured."""
    section = yaml.safe_load(path.read_text(encoding="utf-8"))["detectors"]["pii"]
    entities = section["entities"]
    if not isinstance(entities, Mapping):
        default = float(section.get("min_score", 0.4))
        entities = dict.fromkeys(entities, default)
    return {str(k): float(v) for k, v in entities.items() if k not in NOT_MEASURED}


def build_detector(thresholds: Mapping[str, float]) -> Any:
    config = PiiConfig.model_validate({"entities": dict(thresholds)})
    return DetectorRegistry.builtin().build("pii", {}, [config])


@dataclass
class Counts:
    support: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        # Nothing reported is nothing wrongly reported.
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / self.support if self.support else 1.0


@dataclass(frozen=True, slots=True)
class Miss:
    kind: str  # "FN" or "FP"
    label: str
    value: str
    text: str


@dataclass
class Report:
    counts: dict[str, Counts] = field(default_factory=lambda: {k: Counts() for k in LABELS})
    misses: list[Miss] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    negatives: int = 0
    negatives_flagged: int = 0

    def of(self, label: str) -> Counts:
        return self.counts.setdefault(label, Counts())

    def failing(self) -> list[str]:
        """The measured types under the bar, with why."""
        return [
            f"{label}: precision {c.precision:.3f}, recall {c.recall:.3f}"
            for label in LABELS
            if (c := self.of(label)).precision < BAR or c.recall < BAR or not c.support
        ]


def overlap(a: Span, b: Span) -> int:
    return max(0, min(a[2], b[2]) - max(a[1], b[1]))


def match(gold: Sequence[Span], found: Sequence[Span]) -> tuple[list[Span], list[Span]]:
    """The labelled spans no finding matches, and the findings matching none."""
    unmatched = list(found)
    missed = []
    for span in gold:
        need = MIN_OVERLAP * (span[2] - span[1])
        candidates = [f for f in unmatched if f[0] == span[0] and overlap(f, span) >= need]
        if candidates:
            unmatched.remove(max(candidates, key=lambda f: overlap(f, span)))
        else:
            missed.append(span)
    return missed, unmatched


def evaluate(examples: Sequence[Example], predict: Predict) -> Report:
    report = Report()
    for example in examples:
        started = time.perf_counter()
        found = predict(example.text)
        report.latencies_s.append(time.perf_counter() - started)
        missed, extra = match(example.spans, found)
        if not example.spans:
            report.negatives += 1
            report.negatives_flagged += bool(found)
        for span in example.spans:
            counts = report.of(span[0])
            counts.support += 1
            if span in missed:
                counts.fn += 1
            else:
                counts.tp += 1
        for label, _, _ in extra:
            report.of(label).fp += 1
        for kind, spans in (("FN", missed), ("FP", extra)):
            report.misses.extend(
                Miss(kind, label, example.text[start:end], example.text)
                for label, start, end in spans
            )
    return report


def detector_predict(detector: Any) -> Predict:
    def predict(text: str) -> list[Span]:
        return [(r.entity_type, r.start, r.end) for r in detector.analyze(text)]

    return predict


def table(report: Report) -> str:
    head = f"{'type':<14}{'support':>8}{'TP':>7}{'FP':>6}{'FN':>6}{'precision':>11}{'recall':>8}"
    rows = [head, "-" * len(head)]
    total = Counts()
    for label, c in report.counts.items():
        rows.append(
            f"{label:<14}{c.support:>8}{c.tp:>7}{c.fp:>6}{c.fn:>6}"
            f"{c.precision:>11.3f}{c.recall:>8.3f}"
        )
        total.support += c.support
        total.tp, total.fp, total.fn = total.tp + c.tp, total.fp + c.fp, total.fn + c.fn
    rows.append("-" * len(head))
    rows.append(
        f"{'all':<14}{total.support:>8}{total.tp:>7}{total.fp:>6}{total.fn:>6}"
        f"{total.precision:>11.3f}{total.recall:>8.3f}"
    )
    return "\n".join(rows)


def summary(report: Report, source: str) -> str:
    latencies_ms = [s * 1000 for s in report.latencies_s]
    return "\n".join(
        [
            f"pii detector on {len(latencies_ms)} examples ({source}); thresholds from "
            f"{POLICY.relative_to(POLICY.parents[1])}",
            f"a finding is a true positive when its label matches and it covers at least "
            f"{MIN_OVERLAP:.0%} of the labelled span; every other finding is a false positive",
            "",
            table(report),
            "",
            f"look-alike examples with any finding: {report.negatives_flagged} of "
            f"{report.negatives}",
            f"detector latency per example: median {statistics.median(latencies_ms):.3f} ms, "
            f"p95 {_p95(latencies_ms):.3f} ms",
        ]
    )


def _p95(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def misses(report: Report, per_label: int) -> str:
    lines = []
    shown: dict[tuple[str, str], int] = {}
    for miss in report.misses:
        key = (miss.kind, miss.label)
        shown[key] = shown.get(key, 0) + 1
        if shown[key] <= per_label:
            lines.append(f"  {miss.kind} {miss.label} {miss.value!r} in {miss.text!r}")
    return "\n".join(["misses:", *lines]) if lines else "misses: none"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.evals.pii", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="examples to generate")
    parser.add_argument("--seed", type=int, default=7, help="the generator's seed")
    parser.add_argument("--jsonl", type=Path, help="read the examples from this file instead")
    parser.add_argument("--misses", type=int, default=5, help="misses shown per type and kind")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.jsonl:
        examples, source = read_jsonl(args.jsonl), str(args.jsonl)
    else:
        examples, source = generate(args.n, args.seed), f"generated, seed {args.seed}"
    detector = build_detector(policy_thresholds())
    report = evaluate(examples, detector_predict(detector))
    print(summary(report, source))
    if args.misses:
        print(misses(report, args.misses))
    if failing := report.failing():
        print(f"below {BAR}:\n  " + "\n  ".join(failing))
        return 1
    print(f"every type at or above {BAR} precision and recall")
    return 0


if __name__ == "__main__":
    sys.exit(main())

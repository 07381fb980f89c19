"""What the policy engine costs per exchange with the bundled policies, detectors excluded.

    .venv/bin/python -m bench.policy                          # 20 rounds x 2,000 exchanges per case
    .venv/bin/python -m bench.policy --rounds 5 --per-round 500   # a smoke run

One exchange is what guard's engine does for a chat completion besides running the
detectors: the input decision and the output decision, each a plan lookup
(``Bundle.plan(ctx)``, cached per scope) and ``Plan.decide(scan, ctx, texts, redactor)``.
The bundled policies (``policies/``) are loaded through guard's loader; each case's scans
come from the real patterns detector, run once before any clock starts. Cases: clean
(apache-2.0, no tenant: the common case), llama (llama3.1: two licence rules flag),
secret-in-prompt (an AWS key: blocked) and commercial-nc (a commercial tenant on a
cc-by-nc-4.0 model: blocked). Rounds interleave the cases, the order rotating; each round
times a batch per case (the mean per exchange) and then every exchange alone (the
per-call distribution). For comparison it times one CEL ``expr`` condition against the
same test written as matchers.

The report goes to stdout, progress to stderr; the exit code is 0 unless the bench itself
could not run.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.common import log as _log
from bench.common import version as _v
from bench.policy.cases import (
    CEL_CONDITION,
    MATCHER_CONDITION,
    REDACTOR,
    Case,
    build_cases,
    cel_facts,
    compile_condition,
    decide,
    load_bundle,
)
from guard.policy.conditions import Check, Facts
from guard.policy.engine import Bundle

FLOOR_US = 50.0  # median per exchange, detectors excluded
CEL_CASE = "secret-in-prompt"  # has findings, so the CEL test reads them

clock = time.perf_counter_ns


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.policy", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds (20)")
    parser.add_argument(
        "--per-round", type=int, default=2000, help="exchanges per case per round (2,000)"
    )
    parser.add_argument(
        "--cel-per-round",
        type=int,
        default=200,
        help="condition evaluations per variant per round (200)",
    )
    args = parser.parse_args(argv)
    if min(args.rounds, args.per_round, args.cel_per_round) < 1:
        parser.error("--rounds, --per-round and --cel-per-round must be >= 1")
    return args


# -- timing -----------------------------------------------------------------------------------


@dataclass
class Timings:
    round_us: list[float] = field(default_factory=list)  # batch mean per exchange, per round
    exchange_ns: list[int] = field(default_factory=list)  # every exchange timed alone
    input_ns: list[int] = field(default_factory=list)
    output_ns: list[int] = field(default_factory=list)


def batch_us(bundle: Bundle, case: Case, n: int) -> float:
    """Mean µs per exchange over ``n`` exchanges timed as one batch."""
    plan = bundle.plan
    i, o = case.input, case.output
    started = clock()
    for _ in range(n):
        plan(i.ctx).decide(i.scan, i.ctx, i.texts, REDACTOR)
        plan(o.ctx).decide(o.scan, o.ctx, o.texts, REDACTOR)
    return (clock() - started) / n / 1000


def each_call(bundle: Bundle, case: Case, n: int, into: Timings) -> None:
    """``n`` exchanges, each timed alone (one clock read between input and output)."""
    plan = bundle.plan
    i, o = case.input, case.output
    ins, outs, whole = into.input_ns.append, into.output_ns.append, into.exchange_ns.append
    for _ in range(n):
        t0 = clock()
        plan(i.ctx).decide(i.scan, i.ctx, i.texts, REDACTOR)
        t1 = clock()
        plan(o.ctx).decide(o.scan, o.ctx, o.texts, REDACTOR)
        t2 = clock()
        ins(t1 - t0)
        outs(t2 - t1)
        whole(t2 - t0)


def run_exchanges(
    bundle: Bundle, cases: Sequence[Case], rounds: int, per_round: int
) -> dict[str, Timings]:
    timings = {c.name: Timings() for c in cases}
    for case in cases:  # warm-up: plans cached, code paths hot
        batch_us(bundle, case, min(per_round, 500))
    gc.collect()
    for r in range(rounds):
        order = [*cases[r % len(cases) :], *cases[: r % len(cases)]]
        for case in order:
            timings[case.name].round_us.append(batch_us(bundle, case, per_round))
            each_call(bundle, case, per_round, timings[case.name])
        means = ", ".join(f"{c.name} {timings[c.name].round_us[-1]:.2f}" for c in cases)
        _log(f"exchanges round {r + 1}/{rounds}: {means} µs/exchange")
    return timings


@dataclass(frozen=True)
class Variant:
    name: str
    check: Check
    fresh: bool  # a new Facts per evaluation (else one, its CEL activation cached)


def condition_us(variant: Variant, make: Callable[[], Facts], n: int) -> float:
    """Mean µs per evaluation; the facts are built before the clock starts."""
    if variant.fresh:
        facts = [make() for _ in range(n)]
    else:
        one = make()
        variant.check(one)  # builds and caches its activation
        facts = [one] * n
    check = variant.check
    started = clock()
    for f in facts:
        check(f)
    return (clock() - started) / n / 1000


def run_conditions(case: Case, rounds: int, per_round: int) -> dict[str, list[float]]:
    cel, matchers = compile_condition(CEL_CONDITION), compile_condition(MATCHER_CONDITION)
    variants = (
        Variant("matchers, fresh facts", matchers, fresh=True),
        Variant("CEL expr, fresh facts", cel, fresh=True),
        Variant("CEL expr, activation cached", cel, fresh=False),
    )
    make = lambda: cel_facts(case)  # noqa: E731
    if not (cel(make()) and matchers(make())):
        raise SystemExit("bench.policy: the comparison conditions should hold on their facts")
    results: dict[str, list[float]] = {v.name: [] for v in variants}
    for v in variants:  # warm-up
        condition_us(v, make, min(per_round, 50))
    for r in range(rounds):
        for v in (*variants[r % 3 :], *variants[: r % 3]):
            results[v.name].append(condition_us(v, make, per_round))
    _log("conditions: " + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in results.items()))
    return results


def clock_ns() -> float:
    """The cost of one clock read, included once in every per-call figure."""
    reads = []
    for _ in range(10_000):
        t0 = clock()
        reads.append(clock() - t0)
    return statistics.median(reads)


# -- report -----------------------------------------------------------------------------------


def pct(values: Sequence[int], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``, in µs."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] / 1000


def _rules(bundle: Bundle, case: Case) -> str:
    parts = []
    for side in (case.input, case.output):
        decision = decide(bundle, side)
        ids = "+".join(decision.rule_ids) or "-"
        parts.append(f"{decision.action.name.lower()} ({ids})")
    return " / ".join(parts)


def header(bundle: Bundle, cases: Sequence[Case], args: argparse.Namespace) -> list[str]:
    on_input = len(bundle.plan(cases[0].input.ctx).rules)
    on_output = len(bundle.plan(cases[0].output.ctx).rules)
    rules = sum(len(p.rules) for p in bundle.policies)
    return [
        "# guard policy evaluation cost (detectors excluded)",
        "",
        f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}",
        f"- guard {_v('guard')}, cel-python {_v('cel-python')}; bundled policies "
        f"{bundle.version}: {len(bundle.policies)} policies, {rules} rules (a chat exchange "
        f"evaluates {on_input} on input, {on_output} on output)",
        f"- {args.rounds} interleaved rounds x {args.per_round:,} exchanges per case, timed "
        "as a batch (the round's mean) and then each alone (per call); GC on, as in guard",
        "",
    ]


def exchange_section(
    bundle: Bundle, cases: Sequence[Case], timings: dict[str, Timings], clock_cost: float
) -> list[str]:
    lines = [
        "## Per exchange: input + output decision",
        "",
        "| case | decision in / out (rules) | µs median | rounds min-max | per call p50 "
        "| p99 | p99.9 | input p50 | output p50 |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in cases:
        t = timings[c.name]
        lines.append(
            f"| {c.name} | {_rules(bundle, c)} | {statistics.median(t.round_us):.2f} "
            f"| {min(t.round_us):.2f}-{max(t.round_us):.2f} | {pct(t.exchange_ns, 50):.2f} "
            f"| {pct(t.exchange_ns, 99):.2f} | {pct(t.exchange_ns, 99.9):.2f} "
            f"| {pct(t.input_ns, 50):.2f} | {pct(t.output_ns, 50):.2f} |"
        )
    lines += [
        "",
        *(f"- {c.name}: {c.what}" for c in cases),
        "",
        "µs median: the median over rounds of each round's batch mean. Per call: every "
        f"exchange timed alone ({len(next(iter(timings.values())).exchange_ns):,} per case); "
        f"these include one clock read (~{clock_cost:.0f} ns). A blocked input ends the "
        "exchange in guard, which then never decides an output; the blocked cases time the "
        "output decision anyway, so they are an upper bound.",
        "",
    ]
    return lines


def condition_section(conditions: dict[str, list[float]], args: argparse.Namespace) -> list[str]:
    base = statistics.median(conditions["matchers, fresh facts"])
    lines = [
        "## One condition, CEL vs matchers",
        "",
        f"`{CEL_CONDITION['expr']}` as CEL, and the same test as matchers "
        f"(`tenant.tier: gold`, `patterns.any: '*'`), on the {CEL_CASE} input's facts with a "
        f"gold-tier tenant; {args.rounds} rounds x {args.cel_per_round:,} evaluations each.",
        "",
        "| condition | µs/evaluation median | rounds min-max | x matchers |",
        "|---|--:|--:|--:|",
    ]
    for name, rounds in conditions.items():
        med = statistics.median(rounds)
        lines.append(
            f"| {name} | {med:.2f} | {min(rounds):.2f}-{max(rounds):.2f} | {med / base:,.0f} |"
        )
    lines += [
        "",
        "Fresh facts: each evaluation builds the CEL activation of a new exchange's facts, "
        "as every exchange does (facts cache theirs); cached: the evaluation alone.",
        "",
    ]
    return lines


def summary(timings: dict[str, Timings], conditions: dict[str, list[float]]) -> list[str]:
    overall = statistics.median(us for t in timings.values() for us in t.round_us)
    medians = {name: statistics.median(t.round_us) for name, t in timings.items()}
    slowest = max(medians, key=lambda name: medians[name])
    cel = statistics.median(conditions["CEL expr, fresh facts"])
    verdict = "PASS" if overall < FLOOR_US else "FAIL"
    return [
        "## Summary",
        "",
        "```",
        f"  [{verdict}] policy evaluation per exchange (bundled policies, detectors excluded) "
        f"< {FLOOR_US:.0f} µs median: {overall:.2f} µs (median of every case's rounds; "
        f"slowest case {slowest} {medians[slowest]:.2f} µs)",
        f"  [info] one CEL expr condition with fresh facts: {cel:.1f} µs = "
        f"{cel / overall:.1f}x a whole exchange of the bundled policies (matchers)",
        "```",
    ]


# -- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    bundle = load_bundle()
    cases = build_cases(bundle)
    _log(f"bundle {bundle.version}: {len(cases)} cases scanned and checked")
    try:
        timings = run_exchanges(bundle, cases, args.rounds, args.per_round)
        cel_case = next(c for c in cases if c.name == CEL_CASE)
        conditions = run_conditions(cel_case, args.rounds, args.cel_per_round)
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    report = [
        *header(bundle, cases, args),
        *exchange_section(bundle, cases, timings, clock_ns()),
        *condition_section(conditions, args),
        *summary(timings, conditions),
        "",
        f"(bench wall time {time.monotonic() - started:.0f} s)",
    ]
    print("\n".join(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

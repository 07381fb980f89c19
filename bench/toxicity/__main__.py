"""What guard's toxicity detector does under concurrent requests, with its micro-batcher
on and off, in process.

    .venv/bin/python -m bench.toxicity              # full, CPU: about 5 minutes
    .venv/bin/python -m bench.toxicity --quick      # a smoke run, under a minute
    .venv/bin/python -m bench.toxicity --models tiny --arms on off wait0

On a GPU host (a CUDA build of torch in the venv), the same script with a model of real
size (float16 there, as guard loads it); its direct forward passes are then timed at batch
sizes 1, 32 and 256 (the on / off ratios are [info] there; about 6 minutes with all three
models, under 3 with ``--models config``):

    .venv/bin/python -m bench.toxicity --device cuda --model-config roberta-base
    .venv/bin/python -m bench.toxicity --device cuda --model-config roberta-base --models config

1. Load: for each model, ``c`` asyncio tasks (c = 1, 8, 32, 128), each awaiting
   ``detector.detect([text], ctx)`` in a loop, a text of one or two chat sentences
   (100-300 characters, 30 % of them abusive; bench/toxicity/texts.py, fixed seed) at a
   time. Per cell: texts/s, p50/p99 latency per request, the batcher's mean batch size,
   and the process's CPU per text. Arms, each a detector built by guard's registry from
   its ``detectors.toxicity`` settings, differing only in ``batch``:
   *on* (guard's defaults: max_size 32, max_wait_ms 2), *off* (max_size 1: one forward
   pass per text, one at a time, in the same worker thread) and, with ``--arms ...
   wait0``, *wait0* (max_size 32, max_wait_ms 0: a batch is whatever is queued when the
   worker gets to it). The arms of a model run back to back at each concurrency, their
   order alternating by round; medians over the rounds are shown.
2. Direct forward passes of the torch models (``--no-forward`` leaves them out):
   ``TorchClassifier.forward`` on windows tokenized beforehand, at batch sizes 1, 8, 32
   on CPU and 1, 32, 256 on CUDA, each call timed alone (``torch.cuda.synchronize()``
   around it on CUDA): what the model itself gains from a batch, the ceiling for the
   batcher.

Models (bench/toxicity/models.py): *tiny*, the test suite's 2-layer BERT (hidden 16)
built with ``tests.fakes.classifiers.hf_classifier``, whose compute is next to nothing,
so its figures are guard's overhead; *profanity*, guard's built-in default
(alt-profanity-check); and ``--model-config`` *bert-mini* (default; 4 layers, hidden 256)
or *roberta-base* (12 layers, hidden 768): randomly initialised, saved with
``save_pretrained`` and loaded through guard's ``transformers`` backend.

The floor: at c=32, batching on gives at least 3x the texts/s of batching off with the
same model on CPU, checked for tiny and the built-in profanity model (the median over the
rounds of each round's on / off ratio); bert-mini's ratio is reported beside the most its
own forward passes gain from a batch on this machine. The report goes to stdout, progress
to stderr; the exit code is 0 unless the bench itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import log as _log
from bench.common import on_sigterm as _on_sigterm
from bench.common import verdict
from bench.common import version as _v
from bench.proxy_overhead.__main__ import percentile
from bench.toxicity import forward as fw
from bench.toxicity import load, models
from bench.toxicity import texts as tx
from guard.detectors.toxicity.detector import ToxicityDetector
from guard.errors import ConfigError

CONCURRENCIES = (1, 8, 32, 128)
FLOOR_C = 32
FLOOR_RATIO = 3.0
# On CPU, with the models the floor names. A real-size model (bert-mini) is reported,
# not held to it: on a 2-core CPU its own forward pass gains under 3x from a batch of 32
# (section 2 shows the ceiling), which no batcher can exceed.
FLOORED = ("tiny", "profanity")
ON, OFF, WAIT0 = "on", "off", "wait0"
ARMS = (ON, OFF, WAIT0)
MODEL_KINDS = ("tiny", "profanity", "config")
FORWARD_SIZES = {"cuda": (1, 32, 256), "cpu": (1, 8, 32)}
WARMUP_REQUESTS = 10


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.toxicity", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round of 0.3 + 1 s cells"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODEL_KINDS,
        default=list(MODEL_KINDS),
        help="which models (config: the one --model-config names); default all",
    )
    parser.add_argument(
        "--model-config",
        choices=models.CONFIGS,
        default="bert-mini",
        help="the real-size model, randomly initialised (default bert-mini)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="cpu",
        help="detectors.toxicity.device of the torch models (default cpu)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="detectors.toxicity.threads (torch's default)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="measured seconds per cell (3; 1 quick)"
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="unmeasured seconds per cell (0.5; 0.3 quick)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3; 1 quick)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(CONCURRENCIES), help="(1 8 32 128)"
    )
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=[ON, OFF], help="(on off)")
    parser.add_argument(
        "--max-size", type=int, default=32, help="batch.max_size of the on arm (32, guard's)"
    )
    parser.add_argument(
        "--max-wait-ms", type=float, default=2.0, help="batch.max_wait_ms of the on arm (2)"
    )
    parser.add_argument(
        "--forward",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time direct forward passes of the torch models (default on)",
    )
    parser.add_argument(
        "--forward-sizes",
        type=int,
        nargs="+",
        default=None,
        help="forward batch sizes (1 32 256 on CUDA, 1 8 32 on CPU)",
    )
    parser.add_argument(
        "--forward-seconds",
        type=float,
        default=None,
        help="timed seconds per forward batch size (2; 0.5 quick)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (1.0 if quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if quick else 0.5)
    args.rounds = max(1, args.rounds or (1 if quick else 3))
    args.forward_seconds = args.forward_seconds or (0.5 if quick else 2.0)
    args.arms = list(dict.fromkeys(args.arms))
    if any(c < 1 for c in args.concurrency):
        parser.error("--concurrency: at least 1")
    return args


@dataclass
class Run:
    """A model in the run: its detectors (one per arm) and what was measured on them."""

    model: models.Model
    detectors: dict[str, ToxicityDetector]
    device: str
    dtype: str
    max_tokens: int | None
    tokens: list[int]  # per text of the pool (torch models)
    cells: dict[tuple[str, int], list[load.Cell]] = field(default_factory=dict)
    passes: list[fw.Pass] = field(default_factory=list)
    flagged: tuple[float, float] | None = None  # profanity: abusive, benign share >= 0.5

    @property
    def name(self) -> str:
        return self.model.name


def batch_settings(arm: str, args: argparse.Namespace) -> tuple[int, float]:
    if arm == OFF:
        return 1, 0.0
    if arm == WAIT0:
        return args.max_size, 0.0
    return args.max_size, args.max_wait_ms


def arm_label(arm: str, args: argparse.Namespace) -> str:
    size, wait = batch_settings(arm, args)
    return f"{arm} (max_size {size}" + (f", max_wait_ms {wait:g})" if size > 1 else ")")


# -- running ----------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, workdir: Path, pool: list[str]) -> list[Run]:
    specs: list[models.Model] = []
    if any(kind != "profanity" for kind in args.models):
        models.quiet()
    for kind in args.models:
        started = time.monotonic()
        if kind == "tiny":
            specs.append(models.tiny(workdir / "tiny", args.device, args.threads))
        elif kind == "profanity":
            specs.append(models.profanity())
        else:
            name = args.model_config
            _log(f"writing a randomly initialised {name} to {workdir / name}")
            specs.append(models.sized(name, workdir / name, args.device, args.threads))
        _log(f"model {specs[-1].name} ready in {time.monotonic() - started:.1f} s")
    runs = []
    for spec in specs:
        started = time.monotonic()
        detectors = {arm: models.build(spec, *batch_settings(arm, args)) for arm in args.arms}
        described = next(iter(detectors.values())).describe()
        tokens = models.token_counts(Path(spec.options["model"]), pool) if spec.torch else []
        runs.append(
            Run(
                spec,
                detectors,
                str(described["device"]),
                str(described["dtype"]),
                described["max_tokens"] if isinstance(described["max_tokens"], int) else None,
                tokens,
            )
        )
        _log(
            f"detector {spec.name}: {len(detectors)} arm(s) on {described['device']} "
            f"({described['dtype']}) in {time.monotonic() - started:.1f} s"
        )
    return runs


async def warm(run: Run, pool: list[tx.Text], args: argparse.Namespace) -> None:
    """A few requests one by one and a burst, per arm, before anything is timed; the
    profanity model's scores of the whole pool, to show the texts are what they say."""
    ctx = load.context()
    texts = [t.text for t in pool]
    for detector in run.detectors.values():
        for text in texts[:WARMUP_REQUESTS]:
            await detector.detect([text], ctx)
        burst = texts[: args.max_size]
        await asyncio.gather(*(detector.detect([t], ctx) for t in burst))
    if run.model.name == models.PROFANITY:
        detector = next(iter(run.detectors.values()))
        findings = await detector.detect(texts, ctx)
        high = {f.text_index for f in findings if f.score >= 0.5}
        abusive = [i for i, t in enumerate(pool) if t.abusive]
        benign = [i for i, t in enumerate(pool) if not t.abusive]
        run.flagged = (
            sum(i in high for i in abusive) / len(abusive),
            sum(i in high for i in benign) / len(benign),
        )


async def run_load(runs: list[Run], pool: list[tx.Text], args: argparse.Namespace) -> None:
    """Every round: each model, each concurrency, its arms back to back (the order
    alternating by round)."""
    for run in runs:
        await warm(run, pool, args)
    texts = [t.text for t in pool]
    for r in range(args.rounds):
        arms = args.arms[r % len(args.arms) :] + args.arms[: r % len(args.arms)]
        for run in runs:
            for c in args.concurrency:
                for arm in arms:
                    cell = await load.run_cell(
                        run.detectors[arm],
                        texts,
                        c,
                        warmup_s=args.warmup,
                        duration_s=args.duration,
                    )
                    run.cells.setdefault((arm, c), []).append(cell)
                    p50 = percentile(cell.latency_s, 50) * 1000 if cell.latency_s else 0.0
                    _log(
                        f"round {r + 1}/{args.rounds} {run.name} c={c} {arm}: "
                        f"{cell.texts_per_s:,.0f} texts/s, p50 {p50:.2f} ms, mean batch "
                        f"{cell.mean_batch:.1f}"
                        + (f", {cell.errors} errors" if cell.errors else "")
                    )


def run_forward(runs: list[Run], pool: list[tx.Text], args: argparse.Namespace) -> None:
    texts = [t.text for t in pool]
    for run in runs:
        if not run.model.torch:
            continue
        sizes = args.forward_sizes or FORWARD_SIZES["cuda" if run.device == "cuda" else "cpu"]
        classifier = fw.load(run.model.options, max(sizes))
        run.passes = fw.time_passes(classifier, texts, sizes, args.forward_seconds)
        for p in run.passes:
            _log(
                f"forward {run.name} batch {p.batch}: {statistics.median(p.call_s) * 1000:.2f} ms, "
                f"{p.texts_per_s:,.0f} texts/s"
            )
        del classifier


# -- report -----------------------------------------------------------------------------------


def ratio_rounds(run: Run, arm: str, c: int) -> list[float]:
    """Round by round: ``arm``'s texts/s / off's at concurrency ``c``; each pair ran back
    to back, so drift on the machine between rounds cancels out."""
    pairs = zip(run.cells[(arm, c)], run.cells[(OFF, c)], strict=True)
    return [a.texts_per_s / b.texts_per_s for a, b in pairs if a.count and b.count]


def _ratio(run: Run, arm: str, c: int) -> float | None:
    if arm == OFF or (OFF, c) not in run.cells or (arm, c) not in run.cells:
        return None
    rounds = ratio_rounds(run, arm, c)
    return statistics.median(rounds) if rounds else None


def _device_line(runs: list[Run]) -> str:
    devices = sorted({r.device for r in runs if r.model.torch})
    if not devices:
        return "no torch model in the run"
    import torch

    if "cuda" not in devices:
        return f"torch models on {', '.join(devices)}, {torch.get_num_threads()} threads"
    return f"torch models on cuda: {torch.cuda.get_device_name(0)} (float16, guard's choice)"


def header(args: argparse.Namespace, runs: list[Run], pool: list[tx.Text]) -> list[str]:
    chars = [len(t.text) for t in pool]
    abusive = sum(t.abusive for t in pool)
    lines = [
        "# guard toxicity detector: micro-batching on vs off",
        "",
        f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}; {_device_line(runs)}",
        f"- guard {_v('guard')}, torch {_v('torch')}, transformers {_v('transformers')}, "
        f"tokenizers {_v('tokenizers')}, alt-profanity-check {_v('alt-profanity-check')}, "
        f"scikit-learn {_v('scikit-learn')}",
        f"- run: {args.rounds} round(s); per cell {args.warmup:g} s warm-up + {args.duration:g} s "
        f"measured; concurrency {', '.join(map(str, args.concurrency))}; arms: "
        + "; ".join(arm_label(a, args) for a in args.arms),
        f"- texts: {len(pool):,} chat messages (seed {tx.SEED}), {abusive} abusive "
        f"({abusive / len(pool):.0%}), {min(chars)}-{max(chars)} characters (median "
        f"{statistics.median(chars):.0f}); each request sends one, in turn",
    ]
    for run in runs:
        tokens = ""
        if run.tokens:
            tokens = (
                f"; tokens per text {min(run.tokens)}-{max(run.tokens)} (median "
                f"{statistics.median(run.tokens):.0f}), window {run.max_tokens}"
            )
        flagged = ""
        if run.flagged:
            flagged = (
                f"; scores >= 0.5 on {run.flagged[0]:.0%} of the abusive texts and "
                f"{run.flagged[1]:.0%} of the benign ones"
            )
        what = f"{run.model.about}{tokens}{flagged}"
        lines.append(f"- model **{run.name}** ({run.device}, {run.dtype}): {what}")
    lines.append("")
    return lines


def load_section(runs: list[Run], args: argparse.Namespace) -> list[str]:
    lines = [
        "## 1. Load: texts/s and latency per request",
        "",
        "c asyncio tasks, each awaiting `detector.detect([text], ctx)` in a loop. texts/s: "
        "requests finished inside the measured window / its length; p50/p99: their "
        "latencies; mean batch: texts / batches the batcher ran in the window; CPU ms/text: "
        "the process's CPU time (every thread: the loop, the batcher's worker, torch's "
        "threads) over the window / texts. Medians over the rounds; x off: the median of "
        "the rounds' texts/s ratios to the off arm.",
        "",
    ]
    for run in runs:
        lines += [
            f"### {run.name}",
            "",
            "| c | arm | texts/s | min-max | x off | p50 ms | p99 ms | mean batch "
            "| CPU ms/text | requests |",
            "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for c in args.concurrency:
            for arm in args.arms:
                s = load.summarize(run.cells[(arm, c)])
                ratio = _ratio(run, arm, c)
                err = f" ⚠ {s.errors} errors" if s.errors else ""
                lines.append(
                    f"| {c} | {arm}{err} | {s.texts_per_s:,.0f} | {min(s.rounds_tps):,.0f}-"
                    f"{max(s.rounds_tps):,.0f} | "
                    + (f"**{ratio:.2f}**" if ratio is not None else "—")
                    + f" | {s.p50_ms:.2f} | {s.p99_ms:.2f} | {s.mean_batch:.1f} "
                    f"| {s.cpu_ms_per_text:.3f} | {s.requests:,} |"
                )
        lines.append("")
    if ON in args.arms and OFF in args.arms:
        lines += ratio_table(runs, args)
    return lines


def ratio_table(runs: list[Run], args: argparse.Namespace) -> list[str]:
    lines = [
        "### Batching on / off, texts/s (median of the per-round ratios)",
        "",
        "| model | " + " | ".join(f"c={c}" for c in args.concurrency) + " |",
        "|---|" + "--:|" * len(args.concurrency),
    ]
    for run in runs:
        cells = []
        for c in args.concurrency:
            ratio = _ratio(run, ON, c)
            rounds = ratio_rounds(run, ON, c)
            spread = f" ({min(rounds):.2f}-{max(rounds):.2f})" if len(rounds) > 1 else ""
            cells.append(f"{ratio:.2f}{spread}" if ratio is not None else "—")
        lines.append(f"| {run.name} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def forward_section(runs: list[Run]) -> list[str]:
    lines = [
        "## 2. Direct forward passes (`TorchClassifier.forward`, prepared windows)",
        "",
        "No batcher, no event loop: each call timed alone (synchronized on CUDA) after "
        f"{fw.WARMUP_CALLS} warm-up calls; windows of the pool's texts in turn, padded to "
        "the batch's longest.",
        "",
        "| model | device | batch | median width | padding | median ms/pass | p90 ms | calls "
        "| texts/s | x batch 1 |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in runs:
        if not run.passes:
            continue
        base = run.passes[0].texts_per_s
        lines.extend(
            f"| {run.name} | {run.device} ({run.dtype}) | {p.batch} "
            f"| {statistics.median(p.widths):.0f} | {p.padding:.0%} "
            f"| {statistics.median(p.call_s) * 1000:.2f} "
            f"| {percentile(p.call_s, 90) * 1000:.2f} | {len(p.call_s)} "
            f"| {p.texts_per_s:,.0f} | {p.texts_per_s / base:.1f} |"
            for p in run.passes
        )
    lines.append("")
    return lines


def summary(runs: list[Run], args: argparse.Namespace) -> list[str]:
    out = ["## Summary", "", "```"]
    both = ON in args.arms and OFF in args.arms
    for run in runs:
        if empty := sorted(
            {(c, arm) for (arm, c), cells in run.cells.items() for x in cells if not x.count}
        ):
            out.append(
                f"  [info] {run.name}: no request finished inside the window of "
                + ", ".join(f"c={c} {arm}" for c, arm in empty)
                + " in some round (a batch outlasts --duration: lengthen it); those rounds "
                "are left out of the ratios"
            )
        if both and FLOOR_C in args.concurrency:
            ratio = _ratio(run, ON, FLOOR_C)
            on = load.summarize(run.cells[(ON, FLOOR_C)]).texts_per_s
            off = load.summarize(run.cells[(OFF, FLOOR_C)]).texts_per_s
            gives = "n/a (not measured)" if ratio is None else f"{ratio:.2f}x"
            text = (
                f"{run.name} ({run.device}): at c={FLOOR_C}, batching on gives "
                f"{gives} the texts/s of batching off"
            )
            floored = run.name in FLOORED and run.device == "cpu"
            figures = f" ({on:,.0f} vs {off:,.0f} texts/s)"
            if floored:
                out.append(
                    verdict((ratio or 0) >= FLOOR_RATIO, f"{text} >= {FLOOR_RATIO:g}x" + figures)
                )
            else:
                out.append(f"  [info] {text}{figures}")
            sizes = {p.batch: p for p in run.passes}
            if 1 in sizes and args.max_size in sizes:
                gain = sizes[args.max_size].texts_per_s / sizes[1].texts_per_s
                out.append(
                    f"  [info] {run.name}: direct forward passes give {gain:.2f}x the texts/s "
                    f"at batch {args.max_size} of batch 1 (section 2): about the most batching "
                    "can give this model on this machine"
                )
        for arm in args.arms:
            if arm == OFF:
                continue
            best_c = max(
                args.concurrency, key=lambda c, a=arm: load.summarize(run.cells[(a, c)]).texts_per_s
            )
            best = load.summarize(run.cells[(arm, best_c)])
            out.append(
                f"  [info] {run.name}, batching {arm}: best {best.texts_per_s:,.0f} texts/s "
                f"at c={best_c} (mean batch {best.mean_batch:.1f}, p99 {best.p99_ms:.1f} ms)"
            )
        if both and 1 in args.concurrency:
            on1 = load.summarize(run.cells[(ON, 1)])
            off1 = load.summarize(run.cells[(OFF, 1)])
            out.append(
                f"  [info] {run.name}, c=1: p50 {on1.p50_ms:.2f} ms batching on vs "
                f"{off1.p50_ms:.2f} ms off ({on1.p50_ms - off1.p50_ms:+.2f} ms; max_wait_ms "
                f"{args.max_wait_ms:g}); texts/s on / off {_ratio(run, ON, 1) or 0:.2f}"
            )
        if run.passes:
            first, last = run.passes[0], run.passes[-1]
            out.append(
                f"  [info] {run.name} forward passes ({run.device}): "
                + ", ".join(f"batch {p.batch} {p.texts_per_s:,.0f} texts/s" for p in run.passes)
                + f" ({last.texts_per_s / first.texts_per_s:.1f}x batch {first.batch})"
            )
    errors = sum(c.errors for run in runs for cells in run.cells.values() for c in cells)
    if errors:
        out.append(verdict(False, f"{errors} request(s) failed (BatcherBusy or the classifier)"))
    out.append("```")
    return out


# -- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    if args.device == "cuda" and set(args.models) - {"profanity"}:
        import torch

        if not torch.cuda.is_available():
            _log("bench.toxicity: --device cuda, but torch sees no CUDA device")
            return 2
    pool = tx.pool()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="guard-bench-toxicity-") as tmp:
        try:
            runs = prepare(args, Path(tmp), [t.text for t in pool])
            asyncio.run(run_load(runs, pool, args))
            if args.forward:
                run_forward(runs, pool, args)
        except ConfigError as exc:
            _log(f"bench.toxicity: guard could not build the detector: {exc}")
            return 2
        except KeyboardInterrupt:
            _log("interrupted")
            return 130
        finally:
            for run in runs:
                for detector in run.detectors.values():
                    detector.close()
    report = header(args, runs, pool) + load_section(runs, args)
    if any(r.passes for r in runs):
        report += forward_section(runs)
    report += summary(runs, args)
    report += ["", f"(bench wall time {time.monotonic() - started:.0f} s)"]
    print("\n".join(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

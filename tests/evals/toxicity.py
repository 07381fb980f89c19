"""How the toxicity detector's classifier scores a hand-labelled set, and what the
bundled policy's thresholds catch and wrongly catch with it.

    python -m tests.evals.toxicity [--options JSON] [--thresholds 0.5,0.8]

``--options`` is guard's ``detectors.toxicity`` settings (default: the built-in
profanity classifier). Per kind of abuse: how many score at or over each threshold
(recall); benign prompts over it (false positives). Each example's highest label.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence

from guard.detectors.registry import DetectorRegistry
from tests.evals.toxicity_set import Example, examples

KINDS = ("profane", "insult", "threat", "hate", "benign")


async def scores(options: dict[str, object], items: Sequence[Example]) -> list[float]:
    detector = DetectorRegistry.builtin().build("toxicity", options)
    found = await detector.detect([e.text for e in items], None)  # type: ignore[arg-type]
    top = [0.0] * len(items)
    for f in found:
        top[f.text_index] = max(top[f.text_index], f.score)
    return top


def report(items: Sequence[Example], top: Sequence[float], thresholds: Sequence[float]) -> str:
    lines = ["| kind | n | " + " | ".join(f">= {t:g}" for t in thresholds) + " | max |"]
    lines.append("|---|--:|" + "--:|" * (len(thresholds) + 1))
    for kind in KINDS:
        mine = [s for e, s in zip(items, top, strict=True) if e.kind == kind]
        over = [sum(s >= t for s in mine) for t in thresholds]
        lines.append(
            f"| {kind} | {len(mine)} | "
            + " | ".join(str(n) for n in over)
            + f" | {max(mine):.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.evals.toxicity")
    parser.add_argument("--options", default="{}", help="detectors.toxicity settings, as JSON")
    parser.add_argument("--thresholds", default="0.5,0.8")
    args = parser.parse_args(argv)
    items = examples()
    top = asyncio.run(scores(json.loads(args.options), items))
    print(report(items, top, [float(t) for t in args.thresholds.split(",")]))


if __name__ == "__main__":
    main()

"""Direct forward passes: ``TorchClassifier.forward`` on windows tokenized beforehand,
no batcher, no event loop. What the model itself does per batch size, the ceiling of
what the batcher can get out of it.

Each call's batch is the next windows of the pool's texts (padded to its longest, as
the batcher's are);
each call is timed alone, after warm-up calls, with ``torch.cuda.synchronize()`` before
and after on CUDA (``forward`` copies the scores back to the host, which waits for the
GPU anyway; the first synchronize keeps earlier work out of the timing).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guard.detectors.toxicity.backends import TorchClassifier, load_classifier
from guard.detectors.toxicity.config import ToxicityOptions

WARMUP_CALLS = 3
MIN_CALLS = 5
MAX_CALLS = 500


@dataclass(frozen=True, slots=True)
class Pass:
    batch: int
    widths: list[int]  # per call: tokens per window after padding (the longest window)
    tokens: list[int]  # per call: real tokens in the batch
    call_s: list[float]

    @property
    def padding(self) -> float:
        """Share of the positions computed that were padding."""
        return 1 - sum(self.tokens) / sum(w * self.batch for w in self.widths)

    @property
    def texts_per_s(self) -> float:
        return self.batch / statistics.median(self.call_s)


def load(options: dict[str, Any], max_batch: int) -> TorchClassifier:
    classifier = load_classifier(ToxicityOptions.model_validate(options), max_batch)
    if not isinstance(classifier, TorchClassifier):
        raise TypeError(f"expected TorchClassifier, got {type(classifier).__name__}")
    return classifier


def time_passes(
    classifier: TorchClassifier, texts: Sequence[str], sizes: Sequence[int], min_s: float
) -> list[Pass]:
    import torch

    cuda = classifier.info.device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    windows, _ = classifier.windows(list(texts))

    def batch(k: int, size: int) -> list[list[int]]:  # the k-th call's windows
        return [windows[(k * size + i) % len(windows)] for i in range(size)]

    out = []
    for size in sizes:
        for k in range(WARMUP_CALLS):
            classifier.forward(batch(k, size))
        calls: list[float] = []
        widths: list[int] = []
        tokens: list[int] = []
        began = time.perf_counter()
        while len(calls) < MAX_CALLS and (
            len(calls) < MIN_CALLS or time.perf_counter() - began < min_s
        ):
            windows_k = batch(len(calls), size)
            sync()
            t = time.perf_counter()
            classifier.forward(windows_k)
            sync()
            calls.append(time.perf_counter() - t)
            widths.append(max(map(len, windows_k)))
            tokens.append(sum(map(len, windows_k)))
        out.append(Pass(size, widths, tokens, calls))
    return out

"""The ``toxicity`` detector: a classifier's label scores as findings, batched.

Every text of a scan goes to the micro-batcher (guard.detectors.batcher), so texts of
concurrent requests share forward passes; each label scoring at least ``min_score``
becomes a finding with that score. What score is too much is for the policies.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from guard.detectors.base import Direction, Finding, ScanContext
from guard.detectors.batcher import MicroBatcher
from guard.detectors.toxicity.backends import Classifier, Scores

NAME = "toxicity"


class ToxicityDetector:
    name = NAME
    directions = frozenset(Direction)

    def __init__(
        self, classifier: Classifier, batcher: MicroBatcher[Scores], min_score: float
    ) -> None:
        self._classifier = classifier
        self._batcher = batcher
        self._min_score = min_score
        # A bundle that drops this detector drops its last reference (exchanges in
        # flight hold theirs to the end): then the worker thread stops and the model
        # is freed, instead of a thread and a model per replaced detector.
        weakref.finalize(self, batcher.close)

    @property
    def labels(self) -> tuple[str, ...]:
        return self._classifier.labels

    async def detect(self, texts: Sequence[str], ctx: ScanContext) -> list[Finding]:
        wanted = [(i, text) for i, text in enumerate(texts) if text.strip()]
        rows = await self._batcher.submit([text for _, text in wanted])
        return [
            Finding(NAME, label, round(min(1.0, max(0.0, score)), 4), index)
            for (index, _), row in zip(wanted, rows, strict=True)
            for label, score in zip(self._classifier.labels, row, strict=True)
            if score >= self._min_score
        ]

    def version(self) -> str:
        return self._classifier.info.version()

    def describe(self) -> dict[str, object]:
        info = self._classifier.info
        stats = self._batcher.stats()
        return {
            "backend": info.backend,
            "model": info.name,
            "revision": info.revision,
            "licence": info.licence,
            "device": info.device,
            "dtype": info.dtype,
            "labels": list(self._classifier.labels),
            "max_tokens": info.max_tokens,
            "batch": {
                "max_size": self._batcher.max_batch,
                "max_wait_ms": self._batcher.max_wait_s * 1000,
                "max_queue": self._batcher.max_queue,
                "batches": stats.batches,
                "texts": stats.texts,
                "mean_size": round(stats.mean_batch, 2),
                "largest": stats.largest,
                "queued": stats.queued,
            },
        }

    def close(self) -> None:
        self._batcher.close()

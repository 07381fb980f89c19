"""The ``toxicity`` detector: classifier scores (toxicity, insult, threat …) as findings.

A classifier is loaded from local files only (guard.detectors.toxicity.backends), on
CUDA where there is one, and fed by a micro-batcher that runs the texts of
concurrent requests in one forward pass. Configuration: guard.detectors.toxicity.config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from guard.detectors.registry import DetectorEntry, options_reason
from guard.detectors.toxicity.config import ToxicityOptions
from guard.errors import ConfigError

if TYPE_CHECKING:
    from guard.detectors.toxicity.detector import ToxicityDetector

log = logging.getLogger(__name__)
NAME = "toxicity"


def build(options: Mapping[str, Any], configs: Sequence[BaseModel]) -> ToxicityDetector:  # noqa: ARG001  # policies set no options
    # The classifier (and torch under it) loads here, when a policy needs the detector.
    from guard.detectors.batcher import MicroBatcher  # noqa: PLC0415
    from guard.detectors.toxicity.backends import load_classifier  # noqa: PLC0415
    from guard.detectors.toxicity.detector import ToxicityDetector  # noqa: PLC0415

    try:
        opts = ToxicityOptions.model_validate(dict(options))
    except ValidationError as exc:
        raise ConfigError(f"toxicity: {options_reason(exc)}") from None
    classifier = load_classifier(opts, opts.batch.max_size)
    batcher = MicroBatcher(
        classifier.score,
        max_batch=opts.batch.max_size,
        max_wait_s=opts.batch.max_wait_ms / 1000,
        max_queue=opts.batch.max_queue,
        queue_timeout_s=opts.batch.queue_timeout_s,
        name=f"toxicity-{classifier.info.device}",
    )
    detector = ToxicityDetector(classifier, batcher, opts.min_score)
    info = classifier.info
    log.info(
        "toxicity: %s (%s) on %s, labels %s",
        info.version(),
        info.backend,
        info.device,
        ", ".join(classifier.labels),
    )
    if info.backend == "profanity":
        log.info(
            "toxicity: the built-in classifier scores profanity only; set detectors.toxicity "
            "to a Detoxify or Hugging Face model for toxicity, insults, threats and hate"
        )
    return detector


ENTRY = DetectorEntry(factory=build)

__all__ = ["ENTRY", "NAME", "ToxicityOptions"]

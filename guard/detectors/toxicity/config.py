"""guard's settings for the ``toxicity`` detector (``detectors.toxicity``).

The classifier is guard's to load (a path, a device, threads, the batcher); what
score is too much is the policies' to say, in their rules (``toxicity.insult: {gt:
0.5}``), so a policy's own ``detectors.toxicity`` section takes no settings.

    detectors:
      toxicity:
        backend: detoxify            # profanity (built in) | detoxify | transformers
        model: /models/detoxify-original   # a directory (guard models pull ... --to DIR)
        device: auto                 # auto: cuda (half precision) where there is one
        threads: 4                   # CPU threads for inference
        batch: {max_size: 32, max_wait_ms: 2, max_queue: 1024, queue_timeout_s: 1}
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Backend = Literal["profanity", "detoxify", "transformers"]
Device = Literal["auto", "cpu", "cuda"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchOptions(Strict):
    max_size: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=32, description="Texts (or windows of long texts) in one forward pass."
    )
    max_wait_ms: Annotated[float, Field(ge=0, le=1000)] = Field(
        default=2.0, description="How long the first queued text waits for others to join it."
    )
    max_queue: Annotated[int, Field(ge=1)] = Field(
        default=1024, description="Texts waiting at most; more wait for room, then fail."
    )
    queue_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="How long a request waits for room before its scan fails."
    )


class ToxicityOptions(Strict):
    backend: Backend = "profanity"
    model: str | None = Field(
        default=None, description="The model directory (detoxify, transformers)."
    )
    checkpoint: str | None = Field(
        default=None,
        description="detoxify: the .ckpt file, if not the one *.ckpt in the model directory.",
    )
    device: Device = "auto"
    threads: Annotated[int, Field(ge=1, le=256)] | None = Field(
        default=None, description="CPU inference threads (default: torch's own choice)."
    )
    max_tokens: Annotated[int, Field(ge=8, le=8192)] | None = Field(
        default=None,
        description="Window length in tokens for long texts (default: the model's maximum).",
    )
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.1,
        description="Scores under this are not reported as findings, so that plain text "
        "leaves no trace in the audit trail; a rule's threshold under it never matches.",
    )
    batch: BatchOptions = BatchOptions()
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="The model's name in /readyz and the audit trail."
    )
    revision: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="Default: a digest of the weights file."
    )
    licence: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="Default: the model card's `license:`, if it has one."
    )

    @model_validator(mode="after")
    def _model_for_backend(self) -> Self:
        if self.backend != "profanity" and not self.model:
            raise ValueError(f"backend {self.backend} needs `model:` (a local directory)")
        if self.backend == "profanity" and (self.model or self.checkpoint):
            raise ValueError("backend profanity ships its weights: no `model:` or `checkpoint:`")
        if self.checkpoint and self.backend != "detoxify":
            raise ValueError("`checkpoint:` is for backend detoxify")
        return self

"""The classifiers behind the ``toxicity`` detector, loaded from local files only.

Three backends, one interface (``Classifier.score``: texts in, one row of label
scores per text out, called in the batcher's worker thread):

- ``profanity``: alt-profanity-check, a linear SVM whose trained weights come inside
  its PyPI package. It scores profanity (swearing, obscene insults), not toxicity:
  hate or threats written without swear words score low. The built-in default, so
  that guard blocks real abuse with nothing to download.
- ``detoxify``: a Detoxify checkpoint (``original``, ``unbiased``, ``multilingual``),
  built with Detoxify's own ``get_model_and_tokenizer`` from a directory holding the
  ``.ckpt`` and its base model's config and tokenizer. The checkpoint is a pickle
  (``torch.load(weights_only=False)``, as Detoxify loads it): load only files you trust.
- ``transformers``: any Hugging Face ``text-classification`` model directory;
  multi-label (sigmoid) or single-label (softmax), as its config's ``problem_type`` says.

Texts longer than the model's window are split into windows of its maximum length
in tokens and scored as the maximum over their windows.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from guard.detectors.toxicity.config import ToxicityOptions
from guard.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
Scores = tuple[float, ...]  # one per label, in the classifier's label order
# Detoxify's own renaming, so that every checkpoint reports the same names.
DETOXIFY_NAMES = {
    "toxic": "toxicity",
    "identity_hate": "identity_attack",
    "severe_toxic": "severe_toxicity",
}
PULL_HINT = "on a machine with internet: guard models pull {kind} --to {path}"
_LICENCE = re.compile(r"^licen[cs]e:\s*([\w.\-+]+)\s*$", re.MULTILINE | re.IGNORECASE)
_DIGEST_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What produced a score: for /readyz and every audit event."""

    backend: str
    name: str
    revision: str
    licence: str
    device: str
    dtype: str
    max_tokens: int | None  # None: the backend takes any length

    def version(self) -> str:
        return f"{self.name}@{self.revision} ({self.licence}; {self.device}, {self.dtype})"


class Classifier(Protocol):
    labels: tuple[str, ...]
    info: ModelInfo

    def score(self, texts: list[str]) -> list[Scores]:
        """One row per text; called in the worker thread, never on the event loop."""
        ...


def load_classifier(options: ToxicityOptions, max_batch: int) -> Classifier:
    if options.backend == "profanity":
        return ProfanityClassifier(options)
    if options.backend == "detoxify":
        return _detoxify(options, max_batch)
    return _transformers(options, max_batch)


# -- profanity (ships its weights) -------------------------------------------------------


class ProfanityClassifier:
    """alt-profanity-check: TF-IDF word n-grams, a linear SVM in five calibrated folds.

    Its own ``predict_prob`` spends 8 ms a call in scikit-learn's input checks, run
    again for each fold, whatever the batch (measured). The same sum is computed here
    straight from the fitted folds (coefficients and sigmoid calibration: about 1.5
    ms for one text, 4 ms for 32), and checked against ``predict_prob`` at load: if
    a scikit-learn release lays its fitted models out differently, guard keeps
    ``predict_prob``."""

    labels: tuple[str, ...] = ("profanity",)
    PROBES = (
        "you are a fucking idiot",
        "have a nice day",
        "shut up, moron",
        "how do I kill a stuck process?",
        "",
    )

    def __init__(self, options: ToxicityOptions) -> None:
        try:
            from profanity_check import profanity_check  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover  # a dependency of guard
            raise ConfigError(
                f"toxicity: backend profanity needs alt-profanity-check: {exc}"
            ) from None
        self._module = profanity_check
        self._folds = _folds(profanity_check.model)
        if self._folds is not None and not self._agrees():
            self._folds = None
        version = importlib.metadata.version("alt-profanity-check")
        self.info = ModelInfo(
            backend="profanity",
            name=options.name or "alt-profanity-check",
            revision=options.revision or version,
            licence=options.licence or "MIT",
            device="cpu",
            dtype="float64",
            max_tokens=None,
        )

    def score(self, texts: list[str]) -> list[Scores]:
        if self._folds is None:
            return [(float(p),) for p in self._module.predict_prob(texts)]
        import numpy as np  # noqa: PLC0415

        features = self._module.vectorizer.transform(texts)
        probs = np.zeros(len(texts))
        for weights, intercept, a, b in self._folds:
            decision = features @ weights + intercept
            probs += 1.0 / (1.0 + np.exp(a * decision + b))
        return [(float(p),) for p in probs / len(self._folds)]

    def _agrees(self) -> bool:
        fast = [row[0] for row in self.score(list(self.PROBES))]
        own = [float(p) for p in self._module.predict_prob(list(self.PROBES))]
        return all(abs(x - y) < 1e-9 for x, y in zip(fast, own, strict=True))


def _folds(model: Any) -> list[tuple[Any, float, float, float]] | None:
    """(coefficients, intercept, a, b) of each calibrated fold of a binary
    ``CalibratedClassifierCV(LinearSVC, method="sigmoid")``; None for anything else."""
    try:
        if model.method != "sigmoid" or len(model.classes_) != 2:
            return None
        return [
            (
                fold.estimator.coef_[0],
                float(fold.estimator.intercept_[0]),
                float(fold.calibrators[0].a_),
                float(fold.calibrators[0].b_),
            )
            for fold in model.calibrated_classifiers_
        ]
    except (AttributeError, IndexError, TypeError):
        return None


# -- torch models ------------------------------------------------------------------------


class TorchClassifier:
    """A sequence classifier and its tokenizer, windows for long texts, sub-batches."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        labels: Sequence[str],
        *,
        multi_label: bool,
        device: str,
        max_tokens: int,
        max_batch: int,
        info: ModelInfo,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.labels = tuple(labels)
        self._multi_label = multi_label
        self._device = device
        self._max_tokens = max_tokens
        self._pad = int(tokenizer.pad_token_id or 0)
        self._max_batch = max_batch
        self.info = info

    def windows(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Each text's token ids in windows of the model's length (special tokens
        included), and the text each window belongs to; the tokenizer cuts them."""
        enc = self._tokenizer(
            texts,
            truncation=True,
            max_length=self._max_tokens,
            return_overflowing_tokens=True,
            verbose=False,
        )
        return list(enc["input_ids"]), list(enc["overflow_to_sample_mapping"])

    def score(self, texts: list[str]) -> list[Scores]:
        windows, owners = self.windows(texts)
        rows: list[list[float]] = []
        for at in range(0, len(windows), self._max_batch):
            rows.extend(self.forward(windows[at : at + self._max_batch]))
        best: list[list[float]] = [[0.0] * len(self.labels) for _ in texts]
        for owner, row in zip(owners, rows, strict=True):
            best[owner] = [max(a, b) for a, b in zip(best[owner], row, strict=True)]
        return [tuple(row) for row in best]

    def forward(self, windows: list[list[int]]) -> list[list[float]]:
        """Label probabilities of each window, in one forward pass."""
        import torch  # noqa: PLC0415

        width = max(map(len, windows))
        # Padded as lists, then one tensor each: a quarter of row-by-row copying's cost.
        ids = torch.tensor([w + [self._pad] * (width - len(w)) for w in windows])
        mask = torch.tensor([[1] * len(w) + [0] * (width - len(w)) for w in windows])
        with torch.inference_mode():
            logits = self._model(
                input_ids=ids.to(self._device), attention_mask=mask.to(self._device)
            ).logits.float()
        probs = torch.sigmoid(logits) if self._multi_label else torch.softmax(logits, dim=-1)
        # Detoxify's unbiased checkpoint has more outputs (16) than named classes (7):
        # as Detoxify does, the named ones are the first.
        out: list[list[float]] = probs[:, : len(self.labels)].cpu().tolist()
        return out


def _torch_device(options: ToxicityOptions) -> tuple[str, torch.dtype]:
    import torch  # noqa: PLC0415

    cuda = torch.cuda.is_available()
    if options.device == "cuda" and not cuda:
        raise ConfigError("toxicity: device cuda was asked for, but torch sees no CUDA device")
    if options.device == "cuda" or (options.device == "auto" and cuda):
        return "cuda", torch.float16
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    return "cpu", torch.float32


def _needs_torch(backend: str) -> None:
    wanted = ["torch", "transformers"] + (["detoxify"] if backend == "detoxify" else [])
    if missing := [m for m in wanted if importlib.util.find_spec(m) is None]:
        raise ConfigError(
            f"toxicity: backend {backend} needs {', '.join(missing)} "
            "(pip install 'guard[toxicity]'; install torch first, the build for your GPU)"
        )
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # for operators' logs


def _directory(options: ToxicityOptions, kind: str) -> Path:
    path = Path(str(options.model))
    if not path.is_dir():
        hint = _hint(kind, path)
        raise ConfigError(f"toxicity: model directory not found: {path} ({hint})")
    return path


def _hint(kind: str, path: Path) -> str:
    hint = PULL_HINT.format(kind=kind, path=path)
    return (
        hint + " (or detoxify-unbiased, detoxify-multilingual)"
        if kind == "detoxify-original"
        else hint
    )


def _info(  # noqa: PLR0917  # one call per backend, each argument named there
    options: ToxicityOptions, path: Path, weights: Path | None, device: str, dtype: str, tokens: int
) -> ModelInfo:
    return ModelInfo(
        backend=options.backend,
        name=options.name or path.name,
        revision=options.revision or (_digest(weights) if weights else "unknown"),
        licence=options.licence or _card_licence(path) or "unknown",
        device=device,
        dtype=dtype,
        max_tokens=tokens,
    )


def _digest(weights: Path) -> str:
    """The first 12 hex digits of the weights' SHA-256: the revision of local weights."""
    h = hashlib.sha256()
    with weights.open("rb") as f:
        while chunk := f.read(_DIGEST_CHUNK):
            h.update(chunk)
    return h.hexdigest()[:12]


def _card_licence(path: Path) -> str | None:
    """``license:`` from the model card's front matter (README.md), as the hub writes it."""
    card = path / "README.md"
    if not card.is_file():
        return None
    found = _LICENCE.search(card.read_text(encoding="utf-8", errors="replace")[:4096])
    return found.group(1) if found else None


def _max_tokens(options: ToxicityOptions, tokenizer: Any, config: Any) -> int:
    if options.max_tokens is not None:
        return options.max_tokens
    limits = [
        int(v)
        for v in (
            getattr(tokenizer, "model_max_length", None),
            getattr(config, "max_position_embeddings", None),
        )
        if isinstance(v, int) and 0 < v < 100_000
    ]
    # RoBERTa's position table holds two padding offsets: 514 positions, 512 tokens.
    limit = min(limits) if limits else 512
    return limit - 2 if getattr(config, "model_type", "") in {"roberta", "xlm-roberta"} else limit


def _weights(path: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    return None


def _transformers(options: ToxicityOptions, max_batch: int) -> TorchClassifier:
    _needs_torch("transformers")
    path = _directory(options, "hf:MODEL_ID")
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"toxicity: {path} holds no config.json; a text-classification model directory "
            "(config.json, weights, tokenizer) is needed "
            f"({_hint('hf:MODEL_ID', path)})"
        )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: PLC0415

    device, dtype = _torch_device(options)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"toxicity: transformers could not load {path}: {exc}") from None
    config = model.config
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    tokens = _max_tokens(options, tokenizer, config)
    model.to(device=device, dtype=dtype).eval()
    return TorchClassifier(
        model,
        tokenizer,
        labels,
        multi_label=config.problem_type == "multi_label_classification",
        device=device,
        max_tokens=tokens,
        max_batch=max_batch,
        info=_info(
            options, path, _weights(path), device, str(dtype).removeprefix("torch."), tokens
        ),
    )


def _detoxify(options: ToxicityOptions, max_batch: int) -> TorchClassifier:
    _needs_torch("detoxify")
    kind = "detoxify-original"  # named in the hints, with the other two
    path = _directory(options, kind)
    checkpoint = Path(options.checkpoint) if options.checkpoint else _one_checkpoint(path, kind)
    if not checkpoint.is_file():
        raise ConfigError(f"toxicity: checkpoint not found: {checkpoint} ({_hint(kind, path)})")
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"toxicity: {path} holds no config.json: Detoxify needs its base model's config "
            f"and tokenizer beside the checkpoint ({_hint(kind, path)})"
        )
    import torch  # noqa: PLC0415
    from detoxify.detoxify import get_model_and_tokenizer  # noqa: PLC0415

    device, dtype = _torch_device(options)
    try:
        # A pickle, as Detoxify itself loads it: trusted files only (see the module doc).
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=False)
        args = dict(loaded["config"]["arch"]["args"])
        classes = list(loaded["config"]["dataset"]["args"]["classes"])
        state = loaded["state_dict"]
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"toxicity: {checkpoint} is not a Detoxify checkpoint (config and state_dict): "
            f"{type(exc).__name__}"
        ) from None
    # Detoxify reads the base model's config from ``model_type``; a hub name there would
    # reach for the network, so it is pointed at the local directory.
    args["model_type"] = str(path)
    try:
        model, tokenizer = get_model_and_tokenizer(
            **args, state_dict=state, huggingface_config_path=str(path)
        )
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ConfigError(f"toxicity: Detoxify could not build {checkpoint}: {exc}") from None
    labels = [DETOXIFY_NAMES.get(c, c) for c in classes]
    tokens = _max_tokens(options, tokenizer, model.config)
    model.to(device=device, dtype=dtype).eval()
    return TorchClassifier(
        model,
        tokenizer,
        labels,
        multi_label=True,  # Detoxify's heads are independent sigmoids
        device=device,
        max_tokens=tokens,
        max_batch=max_batch,
        info=_info(options, path, checkpoint, device, str(dtype).removeprefix("torch."), tokens),
    )


def _one_checkpoint(path: Path, kind: str) -> Path:
    found = sorted(path.glob("*.ckpt"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(
            f"toxicity: no Detoxify checkpoint (*.ckpt) in {path} ({_hint(kind, path)})"
        )
    raise ConfigError(f"toxicity: {len(found)} checkpoints in {path}; name one with `checkpoint:`")

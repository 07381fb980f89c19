"""``guard models pull``: a toxicity classifier's files, fetched once into a directory.

guard loads classifiers from local directories only (guard.detectors.toxicity.backends);
this is the one command that reaches the network, meant for a machine with internet
whose DIR is then copied to the one that runs guard.

- ``detoxify-original``, ``detoxify-unbiased``, ``detoxify-multilingual``: Detoxify's
  checkpoint (the URL is detoxify's own ``MODEL_URLS``), its base model's config and
  tokenizer from the Hugging Face hub (no weights: the checkpoint holds them), the
  config fitted to the checkpoint's labels, and a README.md whose front matter gives
  the licence (Detoxify's checkpoints are Apache-2.0).
- ``hf:ORG/NAME[@REVISION]``: a Hugging Face text-classification model at a revision
  (default: main), pinned to the commit it resolves to: config, weights (safetensors
  where the repository has them), tokenizer, model card.

Files are downloaded into a staging directory beside DIR and moved into DIR only once
all of them are there, so a failed pull leaves DIR as it was. Timeouts are
huggingface_hub's: HF_HUB_ETAG_TIMEOUT (metadata) and HF_HUB_DOWNLOAD_TIMEOUT (data,
the checkpoint's download included); HF_ENDPOINT, HF_TOKEN and the *_PROXY variables
apply as usual. Exit status: 0 done; 1 a download failed (one line, no traceback);
2 a usage error, a non-empty DIR without --force, or a missing library.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import importlib.metadata
import importlib.util
import json
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from huggingface_hub.hf_api import ModelInfo


@dataclass(frozen=True, slots=True)
class DetoxifyKind:
    checkpoint: str  # the key in detoxify.detoxify.MODEL_URLS
    base: str  # the hub repository of the base model: config and tokenizer
    arch: str  # the base model as the checkpoint's config names it (arch.args.model_type)


# The base models are the ones Detoxify's training configs name (arch.args.model_type);
# the hub keeps them under these organisations now (the old names redirect).
DETOXIFY: dict[str, DetoxifyKind] = {
    "detoxify-original": DetoxifyKind(
        "original", "google-bert/bert-base-uncased", "bert-base-uncased"
    ),
    "detoxify-unbiased": DetoxifyKind("unbiased", "FacebookAI/roberta-base", "roberta-base"),
    "detoxify-multilingual": DetoxifyKind(
        "multilingual", "FacebookAI/xlm-roberta-base", "xlm-roberta-base"
    ),
}
HF_PREFIX = "hf:"
KINDS = (*DETOXIFY, f"{HF_PREFIX}ORG/NAME[@REVISION]")
DETOXIFY_LICENCE = "apache-2.0"
# Config and tokenizer files, never weights; top-level names only.
TOKENIZER_FILES = [
    "config.json",
    "tokenizer*.json",
    "vocab.*",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "spm.model",
    "tokenizer.model",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "added_tokens.json",
]
SAFETENSORS = ["model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"]
PYTORCH_BIN = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"]
CARD_FILES = ["README.md", "LICENSE", "LICENSE.*", "LICENCE", "LICENCE.*"]
# What a pull replaces: weights of a former pull that the new files do not overwrite
# would be loaded in their place (the one *.ckpt, safetensors before .bin).
WEIGHT_SUFFIXES = (".ckpt", ".safetensors", ".bin")
_CHUNK = 1 << 20
_REASON_WIDTH = 200
_INSTALL = "pip install 'guard[toxicity]'"


def _kind(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value in DETOXIFY:
        return value
    if value.startswith(HF_PREFIX):
        repo, at, revision = value.removeprefix(HF_PREFIX).partition("@")
        if repo.count("/") == 1 and all(repo.split("/")) and (revision or not at):
            return value
    raise click.BadParameter(f"unknown kind {value!r}: one of {', '.join(KINDS)}", ctx, param)


class PullFailed(Exception):
    """What was downloaded is not what a model directory needs; the message says why."""


@click.command("pull")
@click.argument("kind", callback=_kind)
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The model directory to write (then `model:` in detectors.toxicity).",
)
@click.option("--force", is_flag=True, help="Write into DIR even if it is not empty.")
def pull(kind: str, to: Path, force: bool) -> None:
    """Download a toxicity classifier into DIR, for `detectors.toxicity` to load offline.

    KIND: detoxify-original, detoxify-unbiased, detoxify-multilingual (Detoxify's
    checkpoints, with their base model's config and tokenizer), or hf:ORG/NAME[@REVISION]
    (a Hugging Face text-classification model). Run it on a machine with internet and
    copy DIR to the one that runs guard. HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT
    set the timeouts in seconds."""
    if not force and _has_files(to):
        _fatal(f"{to} is not empty; pass --force to write the pulled files into it", status=2)
    _needs(kind)
    from huggingface_hub import constants, errors  # noqa: PLC0415

    if constants.is_offline_mode():
        _failed(kind, to, "offline mode: HF_HUB_OFFLINE is set")
    # errors.HTTPError: the hub client's transport errors (a refused connection, a timeout).
    network = (OSError, http.client.HTTPException, errors.HTTPError)  # type: ignore[attr-defined]
    try:
        with _staging(to.resolve()) as staging:
            if kind in DETOXIFY:
                backend, notes = "detoxify", _pull_detoxify(kind, staging)
            else:
                backend, notes = "transformers", _pull_hf(kind, staging)
            written, removed = _move_into(staging, to)
    except PullFailed as exc:
        _fatal(f"could not pull {kind}: {exc}", status=1)
    except errors.HFValidationError as exc:
        _fatal(f"{kind}: {_reason(exc)}", status=2)
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as exc:
        _fatal(
            f"could not download {kind}: {_reason(exc)} — check the name and revision "
            "(a gated or private repository needs HF_TOKEN)",
            status=1,
        )
    except network as exc:
        if isinstance(exc, OSError) and _is_local(exc):
            _fatal(f"could not write {to}: {_reason(exc)}", status=1)
        _failed(kind, to, _reason(exc))
    _report(to, backend, written, removed, notes)


# -- detoxify ----------------------------------------------------------------------------


def _pull_detoxify(kind: str, staging: Path) -> list[str]:
    spec = DETOXIFY[kind]
    base = _model_info(spec.base, None)  # first: it fails fast, before torch is imported
    _snapshot(spec.base, base.sha, staging, TOKENIZER_FILES)
    from detoxify.detoxify import MODEL_URLS  # noqa: PLC0415  # imports torch

    url = MODEL_URLS[spec.checkpoint]
    name = Path(urllib.parse.urlparse(url).path).name
    digest = _download(url, staging / name)
    base_licence = _card_licence(base)
    fit_detoxify(
        staging,
        kind,
        staging / name,
        source=url,
        base=f"{spec.base}@{base.sha}",
        base_licence=base_licence,
    )
    return [
        f"checkpoint {name} (sha256 {digest})",
        f"base model {spec.base} at {base.sha} (config and tokenizer; "
        f"licence {base_licence or 'not stated'})",
        f"licence {DETOXIFY_LICENCE} (Detoxify's checkpoints)",
    ]


def fit_detoxify(
    directory: Path,
    kind: str,
    checkpoint: Path,
    *,
    source: str,
    base: str,
    base_licence: str | None = None,
) -> None:
    """Make DIR a model directory guard's detoxify backend loads: the base model's
    config.json fitted to the checkpoint (its labels: a base config has none, and the
    checkpoint's classifier would not fit it), and a README.md that states the licence.

    The checkpoint is a pickle (loaded as Detoxify and guard load it): it has just come
    from Detoxify's own URL."""
    import torch  # noqa: PLC0415

    from guard.detectors.toxicity.backends import DETOXIFY_NAMES  # noqa: PLC0415

    spec = DETOXIFY[kind]
    try:
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=False)
        args = dict(loaded["config"]["arch"]["args"])
        classes = list(loaded["config"]["dataset"]["args"].get("classes") or args["classes"])
        count = int(args["num_classes"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PullFailed(
            f"{checkpoint.name} is not a Detoxify checkpoint ({type(exc).__name__})"
        ) from None
    if str(args.get("model_type")) != spec.arch:
        raise PullFailed(
            f"{checkpoint.name} names base model {args.get('model_type')!r}, not {spec.arch!r}"
        )
    # The unbiased model has more outputs than classes: the identity heads follow them.
    classes += list(args.get("identity_classes") or [])
    names = [DETOXIFY_NAMES.get(str(c), str(c)) for c in classes[:count]]
    names += [f"LABEL_{i}" for i in range(len(names), count)]
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(
        architectures=[str(args.get("model_name", "ForSequenceClassification"))],
        id2label={str(i): name for i, name in enumerate(names)},
        label2id={name: i for i, name in enumerate(names)},
        problem_type="multi_label_classification",
    )
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (directory / "README.md").write_text(
        f"---\nlicense: {DETOXIFY_LICENCE}\n---\n# {kind}\n\n"
        f"Source: Detoxify's `{spec.checkpoint}` checkpoint {checkpoint.name}, from {source}\n\n"
        f"Base model: {base} (config and tokenizer only; licence "
        f"{base_licence or 'as its model card states'}). config.json is fitted to the "
        f"checkpoint's {count} labels: {', '.join(names)}.\n\n"
        f"Written by `guard models pull {kind}`.\n",
        encoding="utf-8",
    )


def _download(url: str, target: Path) -> str:
    """Stream URL into TARGET; the SHA-256 of what arrived. Proxies from the environment
    apply; the timeout is huggingface_hub's download timeout, for every read."""
    from huggingface_hub import constants  # noqa: PLC0415

    agent = f"guard/{importlib.metadata.version('guard')}"
    request = urllib.request.Request(url, headers={"User-Agent": agent})  # noqa: S310  # the URL is detoxify's own https one
    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".part")
    try:
        with (
            urllib.request.urlopen(request, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response,  # noqa: S310
            partial.open("wb") as out,
        ):
            length = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            chunks = iter(lambda: response.read(_CHUNK), b"")
            steps = -(-length // _CHUNK) if length else None  # about one chunk a read
            with click.progressbar(chunks, length=steps, label=target.name, file=sys.stderr) as bar:
                for chunk in bar:
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # the error holds the response open
        raise
    if length is not None and received != length:
        partial.unlink()
        raise http.client.IncompleteRead(b"", length - received)
    partial.replace(target)
    return digest.hexdigest()


# -- Hugging Face ------------------------------------------------------------------------


def _pull_hf(kind: str, staging: Path) -> list[str]:
    repo, _, revision = kind.removeprefix(HF_PREFIX).partition("@")
    info = _model_info(repo, revision or None)
    files = [s.rfilename for s in info.siblings or []]
    if any(f.endswith(".safetensors") and "/" not in f for f in files):
        weights = SAFETENSORS
    elif any(f.startswith("pytorch_model") and f.endswith(".bin") for f in files):
        weights = PYTORCH_BIN
    else:
        raise PullFailed(f"{repo} holds no PyTorch weights (safetensors or .bin)")
    _snapshot(repo, info.sha, staging, [*TOKENIZER_FILES, *weights, *CARD_FILES])
    if not (staging / "config.json").is_file():
        raise PullFailed(f"{repo} holds no config.json: not a transformers model")
    notes = [f"{repo} at {info.sha} ({revision or 'main'})"]
    if info.pipeline_tag and info.pipeline_tag != "text-classification":
        notes.append(f"note: its pipeline is {info.pipeline_tag}, not text-classification")
    notes.append(f"licence {_card_licence(info) or 'not stated in its model card'}")
    return notes


def _model_info(repo: str, revision: str | None) -> ModelInfo:
    """The repository at REVISION: its commit (what the snapshot is pinned to) and files."""
    from huggingface_hub import HfApi, constants  # noqa: PLC0415

    info = HfApi().model_info(repo, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    if not info.sha:
        raise PullFailed(f"the hub gave no commit for {repo}")
    return info


def _snapshot(repo: str, commit: str | None, into: Path, patterns: list[str]) -> None:
    from huggingface_hub import constants, snapshot_download  # noqa: PLC0415

    snapshot_download(
        repo,
        revision=commit,
        local_dir=into,
        allow_patterns=patterns,
        etag_timeout=constants.HF_HUB_ETAG_TIMEOUT,
        library_name="guard",
        library_version=importlib.metadata.version("guard"),
    )
    shutil.rmtree(into / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping


def _card_licence(info: ModelInfo) -> str | None:
    licence = getattr(info.card_data, "license", None) if info.card_data else None
    return str(licence) if licence else None


# -- the directory -----------------------------------------------------------------------


@contextmanager
def _staging(to: Path) -> Iterator[Path]:
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{to.name}.pull-", dir=to.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into(staging: Path, to: Path) -> tuple[list[Path], list[Path]]:
    """Move the pulled files into TO, and remove weights a former pull left there; the
    files written and the files removed, relative to TO."""
    written = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
    to.mkdir(parents=True, exist_ok=True)
    removed = sorted(
        Path(p.name)
        for p in to.iterdir()
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES and Path(p.name) not in written
    )
    for rel in removed:
        (to / rel).unlink()
    for rel in written:
        (to / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).replace(to / rel)
    return written, removed


def _report(
    to: Path, backend: str, written: list[Path], removed: list[Path], notes: list[str]
) -> None:
    click.echo(f"wrote {to}:")
    for rel in written:
        click.echo(f"  {rel}  {_size((to / rel).stat().st_size)}")
    for rel in removed:
        click.echo(f"  removed {rel} (a former pull's weights)")
    for note in notes:
        click.echo(f"  {note}")
    click.echo(
        "\nIn guard's settings (copy the directory to the machine that runs guard first):\n"
        "detectors:\n"
        "  toxicity:\n"
        f"    backend: {backend}\n"
        f"    model: {to.resolve()}"
    )


def _has_files(to: Path) -> bool:
    try:
        return to.exists() and any(to.iterdir())
    except OSError as exc:
        _fatal(f"cannot read {to}: {_reason(exc)}", status=2)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n} {unit}"
        n //= 1000
    return f"{n} GB"


# -- failures ----------------------------------------------------------------------------


def _needs(kind: str) -> None:
    """Refuse early, without importing torch (seconds), when a library is missing."""
    wanted = ["huggingface_hub"] + (["detoxify", "torch"] if kind in DETOXIFY else [])
    if missing := [name for name in wanted if not _installed(name)]:
        _fatal(
            f"models pull {kind} needs {', '.join(missing)}: {_INSTALL}"
            + ("; install torch first, the build for your GPU" if kind in DETOXIFY else ""),
            status=2,
        )


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: blocked (None in sys.modules)
        return False


def _reason(exc: BaseException) -> str:
    """The error's type and its first line, from the wrapped error that says what
    happened (huggingface_hub wraps a refused connection in 'not found locally')."""
    from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415

    seen: BaseException = exc
    for _ in range(8):
        inner: BaseException | None = None
        if isinstance(seen, urllib.error.HTTPError):
            break
        if isinstance(seen, urllib.error.URLError) and isinstance(seen.reason, BaseException):
            inner = seen.reason
        elif isinstance(seen, LocalEntryNotFoundError):
            inner = seen.__cause__ or seen.__context__
        if inner is None:
            break
        seen = inner
    name = type(seen).__name__
    if isinstance(seen, socket.gaierror):
        name = "DNS lookup failed"
    text = (str(seen).strip().splitlines() or [repr(seen)])[0]
    reason = f"{name}: {text}" if text else name
    return reason if len(reason) <= _REASON_WIDTH else reason[: _REASON_WIDTH - 1] + "…"


def _is_local(exc: OSError) -> bool:
    """A full disk or a directory guard may not write, rather than the network."""
    local = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
    return exc.errno in local and exc.filename is not None


def _failed(kind: str, to: Path, reason: str) -> NoReturn:
    _fatal(
        f"could not download {kind}: {reason} — run this on a machine with internet, "
        f"then copy {to} to this one",
        status=1,
    )


def _fatal(message: str, *, status: int) -> NoReturn:
    click.echo(f"guard: {message}", err=True)
    sys.exit(status)

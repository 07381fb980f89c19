"""What every protocol adapter provides: where the texts are, and how to write them back.

Adapters are pure functions over parsed JSON bodies. A text is addressed by its
path in the body, so writing new texts back is one generic function and every
other field (tools, response_format, logprobs, unknown ones) stays as it was.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from guard.errors import BadRequest

JSONPath = tuple[str | int, ...]
StreamFormat = Literal["sse", "ndjson"]
Usage = tuple[int | None, int | None]  # prompt tokens, completion tokens


@dataclass(frozen=True, slots=True)
class TextRef:
    """A string at ``path`` in a body. ``stream_key`` names the running text it belongs
    to across stream chunks (choice and field), so deltas join up in order."""

    path: JSONPath
    text: str
    stream_key: Hashable = None


class Adapter:
    """One API shape. Subclasses fill in the texts; the rest is shared."""

    route: ClassVar[str]
    stream_format: ClassVar[StreamFormat] = "sse"
    stream_by_default: ClassVar[bool] = False

    def request_texts(self, body: dict[str, Any]) -> list[TextRef]:
        raise NotImplementedError

    def response_texts(self, body: Any) -> list[TextRef]:
        return []

    def chunk_texts(self, chunk: Any) -> list[TextRef]:
        return []

    def is_stream(self, body: dict[str, Any]) -> bool:
        value = body.get("stream", self.stream_by_default)
        if not isinstance(value, bool):
            raise BadRequest("'stream' must be a boolean", param="stream")
        return value

    def filtered_final_chunk(self, last_chunk: Any, choices: Sequence[int]) -> Any:
        """The chunk that ends a stream a policy stopped."""
        raise NotImplementedError

    def ends_choice(self, chunk: Any) -> bool:
        """Whether a stream chunk finishes a choice or the stream (a finish reason,
        Ollama's ``done``): such a chunk is never sent in two parts."""
        if not isinstance(chunk, dict):
            return False
        if chunk.get("done") is True:
            return True
        choices = chunk.get("choices")
        return isinstance(choices, list) and any(
            isinstance(c, dict) and c.get("finish_reason") for c in choices
        )

    def usage(self, body: Any) -> Usage | None:
        """The token counts an answer or a stream chunk reports, if it reports any."""
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return None
        return counts(usage.get("prompt_tokens"), usage.get("completion_tokens"))


class Opaque(Adapter):
    """A passthrough path: nothing in it is read."""

    route = "passthrough"

    def request_texts(self, body: dict[str, Any]) -> list[TextRef]:
        return []


OPAQUE = Opaque()


def counts(prompt: Any, completion: Any) -> Usage | None:
    def valid(value: Any) -> int | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31
        return value if ok else None

    found = (valid(prompt), valid(completion))
    return found if found != (None, None) else None


def write_texts(body: Any, refs: Sequence[TextRef], texts: Sequence[str]) -> None:
    """Put ``texts`` back at the refs' paths, in place (the body belongs to one request)."""
    for ref, text in zip(refs, texts, strict=True):
        if text == ref.text:
            continue
        node = body
        for part in ref.path[:-1]:
            node = node[part]
        node[ref.path[-1]] = text


def string_leaves(value: Any, path: JSONPath) -> Iterator[tuple[JSONPath, str]]:
    """Every string inside a JSON value, in document order, with its path (tool-call
    arguments as objects). Iterative: client JSON may nest as deep as the parser allows."""
    stack: list[tuple[Any, JSONPath]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            yield where, node
        elif isinstance(node, dict):
            stack.extend((item, (*where, key)) for key, item in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((node[i], (*where, i)) for i in reversed(range(len(node))))


def as_list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(f"'{name}' must be an array", param=name)
    return value


def as_object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"'{name}' must be an object", param=name)
    return value


def optional_string(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise BadRequest(f"'{name}' must be a string", param=name)


def text_inputs(value: Any, name: str) -> list[tuple[JSONPath, str]]:
    """A prompt or embedding input: a string or a list of strings.

    Token-id inputs are refused: guard cannot read them, and forwarding what was
    not inspected would be a way around the guards.
    """
    if isinstance(value, str):
        return [((name,), value)]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [((name, index), item) for index, item in enumerate(value)]
    if isinstance(value, list) and value and _is_tokens(value):
        raise BadRequest(f"'{name}' as token ids cannot be inspected; send text", param=name)
    raise BadRequest(f"'{name}' must be a string or an array of strings", param=name)


def _is_tokens(value: list[Any]) -> bool:
    return all(isinstance(item, int) for item in value) or all(
        isinstance(item, list) and all(isinstance(i, int) for i in item) for item in value
    )

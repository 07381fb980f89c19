"""Ollama's native shapes: /api/chat, /api/generate, /api/embed (streams are NDJSON)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from guard.errors import BadRequest
from guard.protocols.base import (
    Adapter,
    TextRef,
    Usage,
    as_list,
    as_object,
    counts,
    optional_string,
    string_leaves,
    text_inputs,
)


class _Ollama(Adapter):
    def usage(self, body: Any) -> Usage | None:
        if not isinstance(body, dict):
            return None
        return counts(body.get("prompt_eval_count"), body.get("eval_count"))


class OllamaChat(_Ollama):
    route = "/api/chat"
    stream_format = "ndjson"
    stream_by_default = True

    def request_texts(self, body: dict[str, Any]) -> list[TextRef]:
        refs: list[TextRef] = []
        for i, raw in enumerate(as_list(body.get("messages", []), "messages")):
            message = as_object(raw, f"messages[{i}]")
            for name in ("content", "thinking"):
                text = optional_string(message.get(name), f"messages[{i}].{name}")
                if text:
                    refs.append(TextRef(("messages", i, name), text))
            refs.extend(_tool_call_refs(message, ("messages", i)))
        return refs

    def response_texts(self, body: Any) -> list[TextRef]:
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            return []
        refs = [
            TextRef(("message", name), message[name], (0, name))
            for name in ("content", "thinking")
            if isinstance(message.get(name), str) and message[name]
        ]
        return refs + _tool_call_refs(message, ("message",))

    def chunk_texts(self, chunk: Any) -> list[TextRef]:
        return self.response_texts(chunk)

    def filtered_final_chunk(self, last_chunk: Any, choices: Sequence[int]) -> Any:
        return {
            **_final_base(last_chunk),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "content_filter",
        }


class OllamaGenerate(_Ollama):
    route = "/api/generate"
    stream_format = "ndjson"
    stream_by_default = True

    def request_texts(self, body: dict[str, Any]) -> list[TextRef]:
        if body.get("context"):
            raise BadRequest("'context' token ids cannot be inspected; send the text instead")
        refs: list[TextRef] = []
        for name in ("system", "prompt", "suffix"):
            text = optional_string(body.get(name), name)
            if text:
                refs.append(TextRef((name,), text))
        return refs

    def response_texts(self, body: Any) -> list[TextRef]:
        if not isinstance(body, dict):
            return []
        return [
            TextRef((name,), body[name], (0, name))
            for name in ("response", "thinking")
            if isinstance(body.get(name), str) and body[name]
        ]

    def chunk_texts(self, chunk: Any) -> list[TextRef]:
        return self.response_texts(chunk)

    def filtered_final_chunk(self, last_chunk: Any, choices: Sequence[int]) -> Any:
        return {
            **_final_base(last_chunk),
            "response": "",
            "done": True,
            "done_reason": "content_filter",
        }


class OllamaEmbed(_Ollama):
    route = "/api/embed"

    def request_texts(self, body: dict[str, Any]) -> list[TextRef]:
        return [TextRef(path, text) for path, text in text_inputs(body.get("input"), "input")]

    def is_stream(self, body: dict[str, Any]) -> bool:
        return False


def _tool_call_refs(message: dict[str, Any], path: tuple[str | int, ...]) -> list[TextRef]:
    """Every string under the message's tool calls: arguments, and names and ids too,
    whatever shape a client or server gives them (no text passes unread)."""
    calls_path = (*path, "tool_calls")
    return [
        TextRef(leaf, text, (0, "tool", leaf[len(calls_path) :]))
        for leaf, text in string_leaves(message.get("tool_calls"), calls_path)
    ]


def _final_base(last: Any) -> dict[str, Any]:
    model = last.get("model") if isinstance(last, dict) else None
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"model": model or "", "created_at": stamp}

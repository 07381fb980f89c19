"""OpenAI-compatible shapes: chat completions, completions, embeddings (vLLM, TGI,
llama.cpp, transformers serve and Ollama's /v1 all speak them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from guard.errors import BadRequest
from guard.protocols.base import (
    Adapter,
    JSONPath,
    TextRef,
    as_list,
    as_object,
    optional_string,
    text_inputs,
)

# Fields of an assistant message or delta that carry model-written text.
_ANSWER_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")


class ChatCompletions(Adapter):
    route = "/v1/chat/completions"

    def request_texts(self, body: dict[str, Any]) -> list[TextRef]:
        refs: list[TextRef] = []
        for i, raw in enumerate(as_list(body.get("messages"), "messages")):
            message = as_object(raw, f"messages[{i}]")
            refs.extend(_content_refs(message.get("content"), ("messages", i, "content")))
            refs.extend(_tool_call_refs(message, ("messages", i)))
        return refs

    def response_texts(self, body: Any) -> list[TextRef]:
        refs: list[TextRef] = []
        for c, choice in _choices(body):
            message = choice.get("message")
            if isinstance(message, dict):
                refs.extend(_answer_refs(message, ("choices", c, "message"), c))
        return refs

    def chunk_texts(self, chunk: Any) -> list[TextRef]:
        refs: list[TextRef] = []
        for c, choice in _choices(chunk):
            delta = choice.get("delta")
            if isinstance(delta, dict):
                refs.extend(_answer_refs(delta, ("choices", c, "delta"), choice.get("index", c)))
        return refs

    def filtered_final_chunk(self, last_chunk: Any, choices: Sequence[int]) -> Any:
        return _final_chunk(last_chunk, "chat.completion.chunk", choices, {"delta": {}})


class Completions(Adapter):
    route = "/v1/completions"

    def request_texts(self, body: dict[str, Any]) -> list[TextRef]:
        refs = [TextRef(path, text) for path, text in text_inputs(body.get("prompt"), "prompt")]
        suffix = optional_string(body.get("suffix"), "suffix")
        if suffix:
            refs.append(TextRef(("suffix",), suffix))
        return refs

    def response_texts(self, body: Any) -> list[TextRef]:
        return [
            TextRef(("choices", c, "text"), choice["text"])
            for c, choice in _choices(body)
            if isinstance(choice.get("text"), str)
        ]

    def chunk_texts(self, chunk: Any) -> list[TextRef]:
        return [
            TextRef(("choices", c, "text"), choice["text"], (choice.get("index", c), "text"))
            for c, choice in _choices(chunk)
            if isinstance(choice.get("text"), str)
        ]

    def filtered_final_chunk(self, last_chunk: Any, choices: Sequence[int]) -> Any:
        return _final_chunk(last_chunk, "text_completion", choices, {"text": ""})


class Embeddings(Adapter):
    route = "/v1/embeddings"

    def request_texts(self, body: dict[str, Any]) -> list[TextRef]:
        return [TextRef(path, text) for path, text in text_inputs(body.get("input"), "input")]

    def is_stream(self, body: dict[str, Any]) -> bool:
        return False


def _content_refs(content: Any, path: JSONPath) -> list[TextRef]:
    """A message's content: a string, null, or a list of parts (text parts are read)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [TextRef(path, content)]
    if not isinstance(content, list):
        raise BadRequest(f"'{_dotted(path)}' must be a string or an array", param="messages")
    refs = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise BadRequest(f"'{_dotted(path)}[{j}]' must be an object", param="messages")
        if part.get("type") == "text" or "text" in part:
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest(f"'{_dotted(path)}[{j}].text' must be a string")
            refs.append(TextRef((*path, j, "text"), text))
    return refs


def _tool_call_refs(message: dict[str, Any], path: JSONPath) -> list[TextRef]:
    refs = []
    calls = message.get("tool_calls") or []
    for k, call in enumerate(as_list(calls, "tool_calls")):
        function = as_object(call, "tool_calls").get("function")
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            refs.append(
                TextRef((*path, "tool_calls", k, "function", "arguments"), function["arguments"])
            )
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and isinstance(legacy.get("arguments"), str):
        refs.append(TextRef((*path, "function_call", "arguments"), legacy["arguments"]))
    return refs


def _answer_refs(message: dict[str, Any], path: JSONPath, choice: int) -> list[TextRef]:
    refs = [
        TextRef((*path, name), message[name], (choice, name))
        for name in _ANSWER_FIELDS
        if isinstance(message.get(name), str) and message[name]
    ]
    calls = message.get("tool_calls")
    for k, call in enumerate(calls if isinstance(calls, list) else []):
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            tool = call.get("index", k)
            refs.append(
                TextRef(
                    (*path, "tool_calls", k, "function", "arguments"),
                    function["arguments"],
                    (choice, "tool", tool),
                )
            )
    return refs


def _choices(body: Any) -> list[tuple[int, dict[str, Any]]]:
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list):
        return []
    return [(c, choice) for c, choice in enumerate(choices) if isinstance(choice, dict)]


def _final_chunk(last: Any, obj: str, choices: Sequence[int], empty: dict[str, Any]) -> Any:
    base = last if isinstance(last, dict) else {}
    chunk = {key: base[key] for key in ("id", "created", "model") if key in base}
    chunk["object"] = obj
    chunk["choices"] = [
        {"index": index, **empty, "finish_reason": "content_filter"} for index in choices
    ]
    return chunk


def _dotted(path: JSONPath) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")

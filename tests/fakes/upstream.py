"""A real loopback model server that speaks both the OpenAI (vLLM-style) and the Ollama API.

The proxy under test must be exercised through its real HTTP client: connection reuse,
chunked streaming, timeouts and aborted connections only behave faithfully over a socket,
so this is an actual aiohttp server rather than a mock.

It runs in its own thread with its own event loop. Sync tests can then call it directly, and
async tests keep working even while their own loop is busy inside the code under test.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

FAKE_MODEL = "fake-model"

# A word with its trailing whitespace; the first match also takes leading whitespace, so the
# pieces always concatenate back to the exact reply.
_WORD = re.compile(r"\s*\S+\s*")
# Large enough for any prompt a test might send; aiohttp's 1 MiB default would turn big
# bodies into 413s that no real model server returns.
_MAX_BODY = 64 * 1024 * 1024
# Handlers still running at stop() are cut off after this, so teardown never waits on a
# stream that a test left hanging with a long chunk_delay.
_STOP_GRACE = 0.25
_START_TIMEOUT = 10.0
_JOIN_TIMEOUT = 10.0
_POLL_INTERVAL = 0.01
# Ollama reports durations in nanoseconds; fixed values keep responses deterministic.
_FAKE_DURATION_NS = 1_000_000

# Which endpoints stream and what they do when the request does not say: OpenAI servers
# answer in one piece by default, Ollama streams by default.
_STREAM_DEFAULT = {
    "/v1/chat/completions": False,
    "/v1/completions": False,
    "/api/chat": True,
    "/api/generate": True,
}


@dataclass
class RecordedRequest:
    """One request exactly as the fake received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Behaviour:
    """How the fake answers the next requests; tests replace or mutate `server.behaviour`."""

    reply_text: str | None = None
    # Streams send exactly these pieces (their join is the reply); else word by word.
    reply_pieces: list[str] | None = None
    tool_call: dict[str, Any] | None = None
    first_byte_delay: float = 0.0
    chunk_delay: float = 0.0
    status: int | None = None
    error_body: Any = None
    reset: bool = False
    send_done: bool = True
    extra_response_fields: dict[str, Any] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Call:
    """Everything a route handler needs, bundled so all handlers share one signature."""

    request: web.Request
    body: dict[str, Any]
    behaviour: Behaviour


@dataclass(frozen=True)
class _Reply:
    """What the fake model 'says' for one request, independent of wire format."""

    text: str
    tool_call: dict[str, Any] | None
    prompt_tokens: int
    pieces: tuple[str, ...] | None = None

    def chunks(self) -> list[str]:
        return list(self.pieces) if self.pieces is not None else _pieces(self.text)

    @property
    def completion_tokens(self) -> int:
        tool_words = _words(_args_json(self.tool_call)) if self.tool_call else 0
        return _words(self.text) + tool_words


@dataclass(frozen=True)
class _Meta:
    """Identifiers that must stay the same across every chunk of one OpenAI response."""

    id: str
    created: int
    model: str
    call_id: str


_Handler = Callable[[_Call], Awaitable[web.StreamResponse]]


# --- request interpretation ---------------------------------------------------------------


def _words(text: str) -> int:
    # "Tokens" are whitespace words: predictable enough for tests to assert exact usage.
    return len(text.split())


def _pieces(text: str) -> list[str]:
    return _WORD.findall(text) or ([text] if text else [])


def _text_of(content: Any) -> str:
    """Text of a message content: a plain string or OpenAI's list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        return "".join(str(p.get("text", "")) for p in parts)
    return ""


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("messages")
    return [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    # Fall back to the last message of any role so system-only prompts still echo something.
    candidates = [m for m in messages if m.get("role") == "user"] or messages
    return _text_of(candidates[-1].get("content")) if candidates else ""


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return " ".join(str(p) for p in prompt)
    return ""


def _inputs(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [item if isinstance(item, str) else json.dumps(item) for item in items]


def _model(body: dict[str, Any]) -> str:
    return str(body.get("model") or FAKE_MODEL)


def _stream_requested(path: str, body: dict[str, Any] | None) -> bool:
    if body is None or path not in _STREAM_DEFAULT:
        return False
    return bool(body.get("stream", _STREAM_DEFAULT[path]))


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _parse_body(raw: bytes) -> dict[str, Any] | None:
    """The JSON object in a request body, or None when the client sent anything else."""
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _reply(behaviour: Behaviour, echo: str, prompt: str, *, tools: bool) -> _Reply:
    tool_call = behaviour.tool_call if tools else None
    if behaviour.reply_pieces is not None:
        pieces = tuple(behaviour.reply_pieces)
        return _Reply("".join(pieces), tool_call, _words(prompt), pieces)
    if behaviour.reply_text is not None:
        text = behaviour.reply_text
    elif tool_call is not None:
        text = ""  # a model that calls a tool usually says nothing alongside it
    else:
        text = "echo: " + echo
    return _Reply(text, tool_call, _words(prompt))


def _args_json(tool_call: dict[str, Any]) -> str:
    args = tool_call.get("arguments", {})
    return args if isinstance(args, str) else json.dumps(args)


def _args_object(tool_call: dict[str, Any]) -> Any:
    args = tool_call.get("arguments", {})
    if not isinstance(args, str):
        return args
    try:
        return json.loads(args)
    except ValueError:
        return args


def _vector(text: str) -> list[float]:
    # Derived from a hash so equal texts give equal vectors across calls and processes.
    numbers = struct.unpack(">8I", hashlib.sha256(text.encode()).digest())
    return [round(n / 0xFFFFFFFF * 2 - 1, 6) for n in numbers]


def _base64_vector(vector: list[float]) -> str:
    # vLLM and OpenAI encode as little-endian float32, which is what the openai client decodes.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _new_meta(body: dict[str, Any], prefix: str) -> _Meta:
    return _Meta(
        id=prefix + uuid.uuid4().hex,
        created=int(time.time()),
        model=_model(body),
        call_id="call_" + uuid.uuid4().hex[:24],
    )


# --- OpenAI wire format -------------------------------------------------------------------


def _openai_error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _usage(reply: _Reply) -> dict[str, int]:
    total = reply.prompt_tokens + reply.completion_tokens
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": total,
    }


def _finish_reason(reply: _Reply) -> str:
    return "tool_calls" if reply.tool_call else "stop"


def _chat_completion(meta: _Meta, reply: _Reply) -> dict[str, Any]:
    # OpenAI sends content null when the model only calls a tool.
    content = reply.text if reply.text or reply.tool_call is None else None
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reply.tool_call is not None:
        function = {"name": reply.tool_call.get("name"), "arguments": _args_json(reply.tool_call)}
        message["tool_calls"] = [{"id": meta.call_id, "type": "function", "function": function}]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": _finish_reason(reply),
    }
    return {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [choice],
        "usage": _usage(reply),
    }


def _chunk(meta: _Meta, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": meta.id,
        "object": obj,
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
    }


def _usage_chunk(meta: _Meta, obj: str, reply: _Reply) -> dict[str, Any]:
    return {**_chunk(meta, obj, []), "usage": _usage(reply)}


def _tool_deltas(meta: _Meta, tool_call: dict[str, Any]) -> Iterator[dict[str, Any]]:
    # Like vLLM: the first delta names the call, later ones carry argument fragments that
    # the client has to concatenate.
    head = {"name": tool_call.get("name"), "arguments": ""}
    yield {"tool_calls": [{"index": 0, "id": meta.call_id, "type": "function", "function": head}]}
    for piece in _pieces(_args_json(tool_call)):
        yield {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}


def _chat_chunks(meta: _Meta, reply: _Reply, include_usage: bool) -> Iterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _chunk(meta, "chat.completion.chunk", [choice])

    yield chunk({"role": "assistant", "content": ""})
    for piece in reply.chunks():
        yield chunk({"content": piece})
    if reply.tool_call is not None:
        yield from (chunk(delta) for delta in _tool_deltas(meta, reply.tool_call))
    yield chunk({}, _finish_reason(reply))
    if include_usage:
        yield _usage_chunk(meta, "chat.completion.chunk", reply)


def _text_choice(text: str, finish: str | None) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}


def _text_completion(meta: _Meta, reply: _Reply) -> dict[str, Any]:
    return {
        **_chunk(meta, "text_completion", [_text_choice(reply.text, "stop")]),
        "usage": _usage(reply),
    }


def _text_chunks(meta: _Meta, reply: _Reply, include_usage: bool) -> Iterator[dict[str, Any]]:
    for piece in reply.chunks():
        yield _chunk(meta, "text_completion", [_text_choice(piece, None)])
    yield _chunk(meta, "text_completion", [_text_choice("", "stop")])
    if include_usage:
        yield _usage_chunk(meta, "text_completion", reply)


# --- Ollama wire format -------------------------------------------------------------------


def _ollama_head(model: str) -> dict[str, Any]:
    return {"model": model, "created_at": _now_iso()}


def _ollama_done(reply: _Reply) -> dict[str, Any]:
    return {
        "done": True,
        "done_reason": "stop",
        "total_duration": 3 * _FAKE_DURATION_NS,
        "load_duration": _FAKE_DURATION_NS,
        "prompt_eval_count": reply.prompt_tokens,
        "prompt_eval_duration": _FAKE_DURATION_NS,
        "eval_count": reply.completion_tokens,
        "eval_duration": _FAKE_DURATION_NS,
    }


def _ollama_message(content: str, tool_call: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_call is not None:
        function = {"name": tool_call.get("name"), "arguments": _args_object(tool_call)}
        message["tool_calls"] = [{"function": function}]
    return message


def _ollama_chat_lines(model: str, reply: _Reply) -> Iterator[dict[str, Any]]:
    for piece in reply.chunks():
        yield {**_ollama_head(model), "message": _ollama_message(piece), "done": False}
    if reply.tool_call is not None:
        message = _ollama_message("", reply.tool_call)
        yield {**_ollama_head(model), "message": message, "done": False}
    yield {**_ollama_head(model), "message": _ollama_message(""), **_ollama_done(reply)}


def _ollama_generate_lines(model: str, reply: _Reply) -> Iterator[dict[str, Any]]:
    for piece in reply.chunks():
        yield {**_ollama_head(model), "response": piece, "done": False}
    yield {**_ollama_head(model), "response": "", **_ollama_done(reply)}


# --- HTTP plumbing ------------------------------------------------------------------------


def _is_ollama_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _error_payload(path: str, message: str, kind: str) -> dict[str, Any]:
    return {"error": message} if _is_ollama_path(path) else _openai_error(message, kind)


def _json_response(status: int, payload: Any, behaviour: Behaviour) -> web.Response:
    response = web.Response(
        status=status, body=json.dumps(payload).encode(), content_type="application/json"
    )
    response.headers.update(behaviour.response_headers)
    return response


def _configured_error(path: str, behaviour: Behaviour, status: int) -> web.Response:
    body = behaviour.error_body
    if body is None:
        body = _error_payload(path, "fake failure", "server_error")
    if isinstance(body, bytes):
        # Lets tests imitate non-JSON failures such as a reverse proxy's HTML 502 page.
        response = web.Response(status=status, body=body, content_type="text/plain")
        response.headers.update(behaviour.response_headers)
        return response
    return _json_response(status, body, behaviour)


class FakeModelServer:
    """Loopback OpenAI + Ollama server; see the module docstring for why it is real."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self.behaviour = Behaviour()
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._disconnects = 0
        self._streams_finished = 0
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: OSError | None = None
        # Handlers cancelled by our own shutdown are not client disconnects.
        self._stopping = False
        self._routes: dict[str, tuple[str, _Handler]] = {
            "/v1/chat/completions": ("POST", self._openai_chat),
            "/v1/completions": ("POST", self._openai_completions),
            "/v1/embeddings": ("POST", self._openai_embeddings),
            "/v1/models": ("GET", self._openai_models),
            "/api/chat": ("POST", self._ollama_chat),
            "/api/generate": ("POST", self._ollama_generate),
            "/api/embed": ("POST", self._ollama_embed),
            "/api/tags": ("GET", self._ollama_tags),
            "/api/version": ("GET", self._ollama_version),
        }

    # --- public API ---

    @property
    def base_url(self) -> str:
        if self._bound_port is None:
            raise RuntimeError("FakeModelServer is not started")
        return f"http://{self._host}:{self._bound_port}"

    @property
    def disconnects(self) -> int:
        with self._lock:
            return self._disconnects

    @property
    def streams_finished(self) -> int:
        with self._lock:
            return self._streams_finished

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("FakeModelServer is already started")
        self._ready.clear()
        self._startup_error = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="fake-model-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("FakeModelServer did not start listening in time")
        if self._startup_error is not None:
            self._thread.join(_JOIN_TIMEOUT)
            self._thread = None
            raise self._startup_error

    def stop(self) -> None:
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        self._stopping = True
        if thread.is_alive() and loop is not None and stop_event is not None:
            loop.call_soon_threadsafe(stop_event.set)
        thread.join(_JOIN_TIMEOUT)
        self._thread = None
        self._loop = None
        self._stop_event = None
        self._bound_port = None

    def __enter__(self) -> FakeModelServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.behaviour = Behaviour()
            self.requests.clear()  # in place, so references tests already hold see it too
            self._disconnects = 0
            self._streams_finished = 0

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL)
        return True

    async def wait_for_async(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - same signature as wait_for on purpose
    ) -> bool:
        """Like wait_for, but yields to the caller's loop, which may be running the proxy."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL_INTERVAL)
        return True

    # --- lifecycle, on the server thread ---

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except OSError as exc:  # typically the port is taken; start() re-raises it
            self._startup_error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation makes a client hang-up cancel the handler at once, so
        # disconnects are seen even while sleeping between chunks, not only at the next write.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=_STOP_GRACE
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
            self._bound_port = int(runner.addresses[0][1])
            self._ready.set()
            await self._stop_event.wait()
        finally:
            await runner.cleanup()

    # --- per-request pipeline ---

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self._record(request, raw)
        if request.path == "/health":
            return web.Response(text="ok")
        behaviour = self.behaviour
        if behaviour.reset:
            return self._abort(request)
        body = _parse_body(raw) if request.method == "POST" else {}
        await self._delay_first_byte(behaviour)
        return await self._answer(request, body, behaviour)

    def _record(self, request: web.Request, raw: bytes) -> None:
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers={name.lower(): value for name, value in raw_headers},
            raw_headers=raw_headers,
            body=raw,
        )
        with self._lock:
            self.requests.append(recorded)

    @staticmethod
    def _abort(request: web.Request) -> web.StreamResponse:
        # Imitates an upstream that dies mid-request: the client gets no status line at all.
        if request.transport is not None:
            request.transport.abort()
        # aiohttp's attempt to send this fails on the dead transport and is swallowed as a
        # premature client disconnect, so nothing reaches the wire or the logs.
        return web.Response()

    async def _delay_first_byte(self, behaviour: Behaviour) -> None:
        if behaviour.first_byte_delay <= 0:
            return
        try:
            await asyncio.sleep(behaviour.first_byte_delay)
        except asyncio.CancelledError:
            # A client that gives up before the first byte abandoned the request,
            # streamed or not.
            self._count_disconnect()
            raise

    async def _answer(
        self, request: web.Request, body: dict[str, Any] | None, behaviour: Behaviour
    ) -> web.StreamResponse:
        path = request.path
        if behaviour.status is not None:
            return _configured_error(path, behaviour, behaviour.status)
        route = self._routes.get(path)
        if route is None:
            return _json_response(
                404, _openai_error(f"no route {path}", "not_found_error"), behaviour
            )
        method, handler = route
        if request.method != method:
            payload = _error_payload(path, f"{request.method} not allowed", "invalid_request_error")
            return _json_response(405, payload, behaviour)
        if body is None:
            payload = _error_payload(path, "body is not a JSON object", "invalid_request_error")
            return _json_response(400, payload, behaviour)
        return await handler(_Call(request, body, behaviour))

    def _ok(self, call: _Call, payload: dict[str, Any]) -> web.Response:
        return _json_response(
            200, {**payload, **call.behaviour.extra_response_fields}, call.behaviour
        )

    async def _sse(self, call: _Call, chunks: Iterable[dict[str, Any]]) -> web.StreamResponse:
        extra = call.behaviour.extra_response_fields

        def frames() -> Iterator[bytes]:
            for chunk in chunks:
                yield f"data: {json.dumps({**chunk, **extra})}\n\n".encode()
            if call.behaviour.send_done:
                yield b"data: [DONE]\n\n"

        return await self._stream(call, "text/event-stream", frames())

    async def _ndjson(self, call: _Call, lines: Iterable[dict[str, Any]]) -> web.StreamResponse:
        extra = call.behaviour.extra_response_fields
        frames = (json.dumps({**line, **extra}).encode() + b"\n" for line in lines)
        return await self._stream(call, "application/x-ndjson", frames)

    async def _stream(
        self, call: _Call, content_type: str, frames: Iterable[bytes]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.headers.update(call.behaviour.response_headers)
        try:
            await response.prepare(call.request)
            for index, frame in enumerate(frames):
                # Re-read each time so a test can speed up or stall a stream already running.
                if index and call.behaviour.chunk_delay > 0:
                    await asyncio.sleep(call.behaviour.chunk_delay)
                await response.write(frame)
            await response.write_eof()
        except ConnectionError:
            # Returning the prepared response lets aiohttp treat it as a quiet hang-up.
            self._count_disconnect()
            return response
        except asyncio.CancelledError:
            self._count_disconnect()
            raise
        with self._lock:
            self._streams_finished += 1
        return response

    def _count_disconnect(self) -> None:
        if self._stopping:
            return
        with self._lock:
            self._disconnects += 1

    # --- OpenAI routes ---

    async def _openai_chat(self, call: _Call) -> web.StreamResponse:
        messages = _messages(call.body)
        prompt = " ".join(_text_of(m.get("content")) for m in messages)
        reply = _reply(call.behaviour, _last_user_text(messages), prompt, tools=True)
        meta = _new_meta(call.body, "chatcmpl-")
        if not _stream_requested(call.request.path, call.body):
            return self._ok(call, _chat_completion(meta, reply))
        return await self._sse(call, _chat_chunks(meta, reply, _include_usage(call.body)))

    async def _openai_completions(self, call: _Call) -> web.StreamResponse:
        prompt = _prompt_text(call.body.get("prompt"))
        reply = _reply(call.behaviour, prompt, prompt, tools=False)
        meta = _new_meta(call.body, "cmpl-")
        if not _stream_requested(call.request.path, call.body):
            return self._ok(call, _text_completion(meta, reply))
        return await self._sse(call, _text_chunks(meta, reply, _include_usage(call.body)))

    async def _openai_embeddings(self, call: _Call) -> web.StreamResponse:
        texts = _inputs(call.body.get("input"))
        as_base64 = call.body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": _base64_vector(_vector(text)) if as_base64 else _vector(text),
            }
            for index, text in enumerate(texts)
        ]
        words = sum(_words(text) for text in texts)
        usage = {"prompt_tokens": words, "total_tokens": words}
        payload = {"object": "list", "data": data, "model": _model(call.body), "usage": usage}
        return self._ok(call, payload)

    async def _openai_models(self, call: _Call) -> web.StreamResponse:
        model = {"id": FAKE_MODEL, "object": "model", "created": 0, "owned_by": "fake"}
        return self._ok(call, {"object": "list", "data": [model]})

    # --- Ollama routes ---

    async def _ollama_chat(self, call: _Call) -> web.StreamResponse:
        messages = _messages(call.body)
        prompt = " ".join(_text_of(m.get("content")) for m in messages)
        reply = _reply(call.behaviour, _last_user_text(messages), prompt, tools=True)
        model = _model(call.body)
        if _stream_requested(call.request.path, call.body):
            return await self._ndjson(call, _ollama_chat_lines(model, reply))
        message = _ollama_message(reply.text, reply.tool_call)
        return self._ok(call, {**_ollama_head(model), "message": message, **_ollama_done(reply)})

    async def _ollama_generate(self, call: _Call) -> web.StreamResponse:
        prompt = _prompt_text(call.body.get("prompt"))
        system = _prompt_text(call.body.get("system"))
        reply = _reply(call.behaviour, prompt, f"{system} {prompt}", tools=False)
        model = _model(call.body)
        if _stream_requested(call.request.path, call.body):
            return await self._ndjson(call, _ollama_generate_lines(model, reply))
        return self._ok(
            call, {**_ollama_head(model), "response": reply.text, **_ollama_done(reply)}
        )

    async def _ollama_embed(self, call: _Call) -> web.StreamResponse:
        texts = _inputs(call.body.get("input"))
        payload = {
            "model": _model(call.body),
            "embeddings": [_vector(text) for text in texts],
            "prompt_eval_count": sum(_words(text) for text in texts),
        }
        return self._ok(call, payload)

    async def _ollama_version(self, call: _Call) -> web.StreamResponse:
        return self._ok(call, {"version": "0.0.0-fake"})

    async def _ollama_tags(self, call: _Call) -> web.StreamResponse:
        model = {
            "name": f"{FAKE_MODEL}:latest",
            "model": f"{FAKE_MODEL}:latest",
            "modified_at": "2024-01-01T00:00:00Z",
            "size": 1,
            "digest": "abc",
            "details": {},
        }
        return self._ok(call, {"models": [model]})

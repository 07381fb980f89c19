"""Ollama's native routes under /api."""

from __future__ import annotations

from litestar import get, post
from litestar.types import ASGIApp

from guard.ingress.common import HTTPRequest, client_key, guarded, services_of


@post("/api/chat", status_code=200)
async def chat(request: HTTPRequest) -> ASGIApp:
    return await guarded(request, "/api/chat")


@post("/api/generate", status_code=200)
async def generate(request: HTTPRequest) -> ASGIApp:
    return await guarded(request, "/api/generate")


@post("/api/embed", status_code=200)
async def embed(request: HTTPRequest) -> ASGIApp:
    return await guarded(request, "/api/embed")


@get("/api/tags", guards=[client_key])
async def tags(request: HTTPRequest) -> dict[str, object]:
    started = request.app.state.started_at
    return {
        "models": [
            {
                "name": card.name,
                "model": card.name,
                "modified_at": started,
                "size": 0,
                "digest": "",
                "details": {},
                "guard": {"upstream_model": card.upstream_model, "licence": card.licence_fields()},
            }
            for card in services_of(request).models
        ]
    }


ROUTES = [chat, generate, embed, tags]

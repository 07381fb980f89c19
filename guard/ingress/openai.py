"""The OpenAI-compatible routes under /v1."""

from __future__ import annotations

from litestar import get, post
from litestar.types import ASGIApp

from guard.ingress.common import HTTPRequest, guarded, services_of


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: HTTPRequest) -> ASGIApp:
    return await guarded(request, "/v1/chat/completions")


@post("/v1/completions", status_code=200)
async def completions(request: HTTPRequest) -> ASGIApp:
    return await guarded(request, "/v1/completions")


@post("/v1/embeddings", status_code=200)
async def embeddings(request: HTTPRequest) -> ASGIApp:
    return await guarded(request, "/v1/embeddings")


@get("/v1/models")
async def list_models(request: HTTPRequest) -> dict[str, object]:
    cards = services_of(request).models
    return {
        "object": "list",
        "data": [
            {
                "id": card.name,
                "object": "model",
                "created": 0,
                "owned_by": card.upstream,
                "guard": {"upstream_model": card.upstream_model, "licence": card.licence_fields()},
            }
            for card in cards
        ],
    }


ROUTES = [chat_completions, completions, embeddings, list_models]

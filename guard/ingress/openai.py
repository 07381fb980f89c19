"""The OpenAI-compatible routes under /v1.

The model routes read their bodies by hand (guard.protocols), so the OpenAPI document
has no request body for them; it does list every status guard itself answers with,
each in the OpenAI error envelope. A model server's own error is relayed as it came.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import get, post
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.types import ASGIApp

from guard.ingress.common import HTTPRequest, client_key, errors, guarded, services_of

# The statuses of guard.errors' ClientFacingError tree that a model route can raise.
MODEL_ERRORS = errors(400, 401, 403, 404, 408, 413, 429, 502, 503, 504)


# One server-sent event (in OpenAPI 3.1 a text/event-stream schema describes each event).
_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "data": Schema(
            type=OpenAPIType.STRING, description="A JSON chunk; the last event's is [DONE]"
        )
    },
    required=["data"],
)


@dataclass
class StreamableOperation(Operation):
    """A 200 in one JSON piece, or as server-sent events when the body says stream: true."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.content["text/event-stream"] = OpenAPIMediaType(schema=_EVENT)


@post(
    "/v1/chat/completions",
    status_code=200,
    responses=MODEL_ERRORS,
    operation_class=StreamableOperation,
)
async def chat_completions(request: HTTPRequest) -> ASGIApp:
    return await guarded(request, "/v1/chat/completions")


@post(
    "/v1/completions",
    status_code=200,
    responses=MODEL_ERRORS,
    operation_class=StreamableOperation,
)
async def completions(request: HTTPRequest) -> ASGIApp:
    return await guarded(request, "/v1/completions")


@post("/v1/embeddings", status_code=200, responses=MODEL_ERRORS)
async def embeddings(request: HTTPRequest) -> ASGIApp:
    return await guarded(request, "/v1/embeddings")


@get("/v1/models", guards=[client_key], responses=errors(401, 403, 503))
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

"""What every route shares: reading an Inbound, writing an Outbound, the services."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, Scope

from guard.errors import (
    AuthUnavailable,
    BodyTimeout,
    BodyTooLarge,
    ClientFacingError,
    ErrorBody,
    Forbidden,
    Unauthorized,
)
from guard.ingress.asgi import StreamingResponse, cancelled_on_disconnect
from guard.pipeline.context import Inbound, Outbound
from guard.pipeline.flow import Services, run_exchange
from guard.protocols import ADAPTERS
from guard.tenancy import Principal, Role
from guard.tenancy.auth import Authenticator

HTTPRequest = Request[Any, Any, State]
_DISCARD_MIN = 1024 * 1024  # a refused body is drained up to this (or the limit, if larger)
_DISCARD_S = 2.0  # a body declared too large: the client is sending it now
_DISCARD_REST_S = 0.25  # a body found too large while reading: there may be no more


_ERROR_TEXT = {
    400: "The request is malformed or asks for something guard cannot do",
    401: "No API key where one is required, or one that is wrong, revoked or expired",
    403: "A key whose role may not use this route, or a policy block",
    404: "No such model, or no such thing to show or change",
    408: "The body did not arrive within server.body_timeout",
    409: "It conflicts with what is there (a tenant that exists; a failed check)",
    413: "The body is over the server's, the tenant's or the key's limit",
    422: "The policy bundle was turned away",
    429: "A tenant's or key's limit was reached; Retry-After says when to retry",
    502: "The model server could not be reached",
    503: "Keys, limits, the audit trail or pseudonyms cannot be checked or kept",
    504: "The model server did not answer in time",
}


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the errors a route answers with, all in the OpenAI envelope."""
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=_ERROR_TEXT[status], generate_examples=False
        )
        for status in statuses
    }


def services_of(request: HTTPRequest) -> Services:
    services: Services = request.app.state.services
    return services


async def read_inbound(request: HTTPRequest) -> Inbound:
    """The request as guard needs it, with the key it was sent with. A request whose key
    fails, or whose body is over the limit, is not read (what is left of the body is
    drained and dropped): the Inbound carries the refusal, so the pipeline records the
    exchange before refusing it."""
    scope = request.scope
    headers = _headers(scope)
    principal, refused = await _authenticate(services_of(request).auth, headers)
    limit = _body_limit(services_of(request).settings.server.max_body_bytes, principal)
    declared = next((v for k, v in headers if k.lower() == "content-length"), "")
    too_large = BodyTooLarge(f"The request body is over the limit of {limit} bytes")
    body = b""
    cap = max(limit, _DISCARD_MIN)
    if refused is not None:
        await _discard_body(request, cap, _DISCARD_REST_S)
    elif declared.isdigit() and int(declared) > limit:
        refused = too_large
        await _discard_body(request, cap, _DISCARD_S)
    else:
        try:
            async with asyncio.timeout(services_of(request).settings.server.body_timeout):
                body = await request.body()
        except TimeoutError:
            refused = BodyTimeout("The request body did not arrive in time")
        except HTTPException as exc:
            if exc.status_code != 413:
                raise
            refused = too_large
            # The chunk that went over may have been the last one: then nothing more
            # comes, so this waits only a moment for the rest.
            await _discard_body(request, cap, _DISCARD_REST_S)
    client = scope.get("client")
    return Inbound(
        method=scope["method"],
        path=scope["path"],
        query=scope["query_string"].decode("latin-1"),
        headers=headers,
        body=body,
        client=client[0] if client else "",
        refused=refused,
        principal=principal,
    )


async def client_key(
    connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler
) -> None:
    """A route guard for what guard answers itself on the model routes (the model
    lists): the key rule of an exchange, without an exchange."""
    headers = _headers(connection.scope)
    _, refused = await _authenticate(connection.app.state.services.auth, headers)
    if refused is not None:
        raise refused


async def _authenticate(
    auth: Authenticator, headers: list[tuple[str, str]]
) -> tuple[Principal | None, ClientFacingError | None]:
    """The request's key, or why it is refused: no key where one is required, a key
    that fails, or one whose role may not call models."""
    given = [v for k, v in headers if k.lower() == "authorization"]
    if len(given) > 1:
        return None, Unauthorized("Send one Authorization header")
    try:
        principal = await auth.authenticate(given[0] if given else None)
    except (Unauthorized, AuthUnavailable) as exc:
        return None, exc
    if principal is None:
        if auth.required:
            return None, Unauthorized("An API key is required: send 'Authorization: Bearer <key>'")
        return None, None
    if principal.role is not Role.CLIENT:
        return principal, Forbidden(f"An {principal.role} key cannot call models; use a client key")
    return principal, None


def _headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]


def _body_limit(server_max: int, principal: Principal | None) -> int:
    if principal is None:
        return server_max
    caps = (principal.key_limits.max_body_bytes, principal.tenant_limits.max_body_bytes)
    return min([server_max, *(c for c in caps if c is not None)])


async def _discard_body(request: HTTPRequest, cap: int, seconds: float) -> None:
    """Read and drop what is left of a refused body, up to ``cap`` bytes and for
    ``seconds`` at most. A socket closed with unread data in it is reset, and the
    client may then lose the 413 before it reads it; past the cap or the time (a
    client that declares a body and sends it slowly, or never), that is its lot."""
    seen = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while seen <= cap:
                message = await request.receive()
                if message["type"] != "http.request":
                    return
                seen += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


def to_asgi(out: Outbound) -> ASGIApp:
    if out.stream is None:
        return ASGIResponse(body=out.body, status_code=out.status, headers=out.headers)
    return StreamingResponse(out.status, out.headers, out.stream, out.on_close)


async def guarded(request: HTTPRequest, route: str) -> ASGIApp:
    """Every guarded route. A client that leaves before the answer starts cancels the
    exchange, and with it the upstream request (a long generation stops at once)."""
    inbound = await read_inbound(request)
    out = None
    async with cancelled_on_disconnect(request.receive):
        out = await run_exchange(inbound, ADAPTERS[route], services_of(request))
    if out is None:
        return ASGIResponse(body=b"", status_code=499)  # nobody is listening any more
    return to_asgi(out)

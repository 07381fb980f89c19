"""The exceptions guard raises on purpose, and the error bodies clients receive.

    GuardError                      anything guard raises on purpose
    ├── ConfigError                 settings (or later, policy files) invalid: stops the start
    └── ClientFacingError           becomes an HTTP error response; carries status, type, code
        ├── BadRequest              400  malformed JSON, wrong types, uninspectable input
        ├── NotFound                404  a path guard does not serve
        │   └── ModelNotFound       404  a model name that is not configured
        ├── BodyTooLarge            413  request body over server.max_body_bytes
        ├── BodyTimeout             408  request body not sent within server.body_timeout
        ├── Unauthorized            401  no API key, or one that is wrong, revoked or expired
        ├── Forbidden               403  a valid key without the role the route needs
        ├── RateLimited             429  a tenant's or key's limit; carries Retry-After
        ├── PolicyBlocked           403  a policy decided to block; message comes from the policy
        ├── AuthUnavailable         503  a key could not be checked: its store is unreachable
        ├── LimitsUnavailable       503  limits could not be counted (limits.on_store_error: refuse)
        ├── AuditUnavailable        503  events can be neither written nor spooled (fail closed)
        ├── VaultUnavailable        503  a conversation's pseudonyms can be neither read nor kept
        └── UpstreamError           502  the model server could not be used
            ├── UpstreamUnavailable 502  connection refused or reset, protocol error
            └── UpstreamTimeout     504  connect or read timeout

An upstream that answers with its own 4xx/5xx is not an error here: its response
is relayed with its status. Third-party exceptions are translated into this tree
at the boundaries (httpx in ``guard.upstream.forward``, Litestar in ``guard.app``).
Messages never contain request or response content: they may be logged.
"""

from __future__ import annotations

import math
from typing import ClassVar

import msgspec


class GuardError(Exception):
    """Base of every exception guard raises on purpose."""


class ConfigError(GuardError):
    """Invalid settings: names the file, the key and what is wrong."""


class ClientFacingError(GuardError):
    status: int = 500  # per class; a policy block carries its own
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> dict[str, str]:
        """Response headers the error needs besides its body."""
        return {}


class BadRequest(ClientFacingError):
    status = 400
    type = "invalid_request_error"


class NotFound(ClientFacingError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class BodyTooLarge(ClientFacingError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Unauthorized(ClientFacingError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"www-authenticate": 'Bearer realm="guard"'}


class BodyTimeout(ClientFacingError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class Forbidden(ClientFacingError):
    status = 403
    type = "invalid_request_error"
    code = "insufficient_permissions"


class RateLimited(ClientFacingError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, math.ceil(self.retry_after_s)))}


class AuthUnavailable(ClientFacingError):
    status = 503
    type = "server_error"
    code = "auth_unavailable"


class LimitsUnavailable(ClientFacingError):
    status = 503
    type = "server_error"
    code = "limits_unavailable"


class AuditUnavailable(ClientFacingError):
    status = 503
    type = "server_error"
    code = "audit_unavailable"


class VaultUnavailable(ClientFacingError):
    status = 503
    type = "server_error"
    code = "pseudonym_store_unavailable"


class PolicyBlocked(ClientFacingError):
    status = 403
    type = "invalid_request_error"
    code = "content_policy_violation"

    def __init__(self, message: str, *, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class UpstreamError(ClientFacingError):
    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ErrorDetail(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(msgspec.Struct, frozen=True):
    """The OpenAI error envelope, as every /v1 and /admin route returns it (and as the
    OpenAPI document declares it)."""

    error: ErrorDetail


def openai_error_body(message: str, type_: str, code: str | None, param: str | None) -> bytes:
    return msgspec.json.encode(ErrorBody(ErrorDetail(message, type_, param, code)))


def ollama_error_body(message: str) -> bytes:
    """Ollama's error shape, as every /api route returns it."""
    return msgspec.json.encode({"error": message})

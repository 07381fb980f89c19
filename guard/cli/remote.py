"""`guard tenants|keys --server URL`: the same six operations over the admin API.

The server checks the input, enforces the key's role and records each change; this
client only turns the parsed command line into request bodies, and the answers into
the views ``guard.tenancy.manage`` makes (the API returns those same views). Every
failure is a ``RemoteError``: one line, never the key, and the exit status.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

_TIMEOUT = httpx.Timeout(10.0)


class RemoteError(Exception):
    """What went wrong, for the user, and the exit status (1: the server's state says
    no; 2: bad input, a refused key, or no answer)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def connect(server: str, key: str) -> Iterator[Remote]:
    # httpx's encoding error would quote the header, key included.
    if not (key.isascii() and key.isprintable() and " " not in key):
        raise RemoteError("GUARD_API_KEY holds characters no key has", 2)
    headers = {"authorization": f"Bearer {key}"}
    try:
        client = httpx.Client(base_url=server, headers=headers, timeout=_TIMEOUT)
    except httpx.InvalidURL as exc:
        raise _unreachable(server, type(exc).__name__) from None
    with client:
        yield Remote(client, server)


class Remote:
    """The admin API at one URL, with the methods of the commands' local backend."""

    def __init__(self, client: httpx.Client, server: str) -> None:
        self._client = client
        self._server = server

    def tenants(self) -> list[dict[str, Any]]:
        return self._listed("/admin/tenants")

    def create_tenant(
        self, tenant_id: str, attributes: dict[str, Any], limits: Mapping[str, str | None]
    ) -> dict[str, Any]:
        body = {"id": tenant_id, "attributes": attributes, "limits": _integers(limits)}
        return self._call("POST", "/admin/tenants", json=body)

    def set_tenant(
        self,
        tenant_id: str,
        attributes: dict[str, Any],
        unset: tuple[str, ...],
        limits: Mapping[str, str | None],
    ) -> dict[str, Any]:
        body = {"attributes": attributes, "unset": list(unset), "limits": _integers(limits)}
        return self._call("PATCH", f"/admin/tenants/{_part(tenant_id)}", json=body)

    def create_key(
        self,
        *,
        tenant_id: str | None,
        role: str,
        name: str,
        expires_at: datetime | None,
        limits: Mapping[str, str | None],
    ) -> tuple[dict[str, Any], str]:
        body = {
            "tenant": tenant_id,
            "role": role,
            "name": name,
            "expires_at": expires_at.isoformat().replace("+00:00", "Z") if expires_at else None,
            "limits": _integers(limits),
        }
        view = self._call("POST", "/admin/keys", json=body)
        token = view.pop("key")
        return view, token

    def keys(self, tenant_id: str | None) -> list[dict[str, Any]]:
        params = {}
        if tenant_id is not None:
            # The list is empty for an unknown tenant; asking first gives the 404.
            self._call("GET", f"/admin/tenants/{_part(tenant_id)}")
            params["tenant"] = tenant_id
        return self._listed("/admin/keys", params)

    def revoke_key(self, key_id: str) -> tuple[dict[str, Any], bool]:
        """The key's view, and whether this call revoked it: a key revoked before is
        left alone, as the local command leaves it, so no second event is recorded."""
        found = [view for view in self.keys(None) if view["id"] == key_id]
        if not found:
            raise RemoteError(f"no key {key_id}", 1)
        if found[0]["revoked_at"] is not None:
            return found[0], False
        return self._call("DELETE", f"/admin/keys/{_part(key_id)}"), True

    def _listed(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._call("GET", path, params=params)["data"]
        return data

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(self._server, type(exc).__name__) from None
        if response.status_code >= 500:
            raise _unreachable(self._server, f"HTTP {response.status_code}")
        if not response.is_success:
            raise _refused(response)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise _unreachable(self._server, "not a JSON object")
        return data


def _integers(limits: Mapping[str, str | None]) -> dict[str, int | None]:
    """The API takes whole numbers; the server checks their names and ranges."""
    out: dict[str, int | None] = {}
    for name, text in limits.items():
        try:
            out[name] = None if text is None else int(text)
        except ValueError:
            raise RemoteError(f"--limit {name}: {text!r} is not a whole number", 2) from None
    return out


def _part(value: str) -> str:
    return quote(value, safe="")


def _refused(response: httpx.Response) -> RemoteError:
    status = response.status_code
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {status}"
    if status in {401, 403}:
        return RemoteError(f"the server refused the key: {message}", 2)
    return RemoteError(message, 1 if status in {404, 409} else 2)


def _unreachable(server: str, what: str) -> RemoteError:
    try:
        shown = str(httpx.URL(server).copy_with(userinfo=b""))
    except httpx.InvalidURL:
        shown = repr(server)
    return RemoteError(f"cannot reach the admin API at {shown} ({what})", 2)

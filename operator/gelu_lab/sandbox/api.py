"""The sandbox's own asyncio client of the Kubernetes API, as its kubelet and clients use it.

Plain JSON objects over HTTP, no credentials: it talks only to the local API emulator. (The
operator talks to any cluster through :mod:`gelu_rollout.adapters.kube`, which wraps the
official client with its configuration and authentication.)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

JsonObject = dict[str, Any]

API_TIMEOUT_S: Final = 10.0
_MERGE_PATCH: Final = "application/merge-patch+json"


class ApiError(RuntimeError):
    """The API server answered a request with an error status."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status


class KubeApi:
    """A small asyncio client of the Kubernetes API: JSON objects over HTTP, no credentials.

    Paths are absolute API paths (``/apis/apps/v1/namespaces/default/deployments``). Give it
    a session, or it opens (and on :meth:`close` closes) its own.
    """

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout_s: float = API_TIMEOUT_S,
    ) -> None:
        self.url = url.rstrip("/")
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str = "application/json",
    ) -> JsonObject | None:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        async with self._client().request(
            method,
            self.url + path,
            params=dict(params or {}),
            data=data,
            headers=headers,
            timeout=self._timeout,
        ) as response:
            text = await response.text()
            if response.status == 404:
                return None
            if response.status >= 400:
                message = text
                with contextlib.suppress(ValueError):
                    message = str(json.loads(text).get("message", text))
                raise ApiError(response.status, method, path, message)
            result = json.loads(text) if text else {}
            return result if isinstance(result, dict) else {}

    async def get(self, path: str) -> JsonObject | None:
        """The object at ``path``, or None when there is none."""
        return await self._request("GET", path)

    async def list(self, path: str, *, label_selector: str = "") -> list[JsonObject]:
        """The items of a collection (an empty list when the resource is not served)."""
        params = {"labelSelector": label_selector} if label_selector else {}
        found = await self._request("GET", path, params=params)
        items = (found or {}).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    async def create(self, path: str, body: Mapping[str, Any]) -> JsonObject:
        created = await self._request("POST", path, body=dict(body))
        if created is None:
            raise ApiError(404, "POST", path, "not found")
        return created

    async def patch(
        self, path: str, body: Mapping[str, Any], *, content_type: str = _MERGE_PATCH
    ) -> JsonObject | None:
        """Patch the object at ``path`` (a JSON merge patch unless told); None when it is gone."""
        return await self._request("PATCH", path, body=dict(body), content_type=content_type)

    async def delete(self, path: str) -> bool:
        """Delete the object at ``path``; False when it was already gone."""
        return await self._request("DELETE", path) is not None


def namespaced_path(prefix: str, plural: str, namespace: str | None, name: str = "") -> str:
    """``<prefix>[/namespaces/<ns>]/<plural>[/<name>]`` (prefix: ``/api/v1``, ``/apis/g/v``)."""
    path = prefix + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    return f"{path}/{name}" if name else path

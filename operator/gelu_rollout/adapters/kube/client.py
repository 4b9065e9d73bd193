"""The Kubernetes API as plain JSON objects, asynchronously: get, list, watch, create,
merge-patch, server-side apply, delete.

The operator's only client of the API besides Kopf itself, and the one its command-line tools
and the lab use too. Objects stay the dicts the pure renderers produce; the kinds come from
:mod:`.kinds`; credentials come from the same login function Kopf uses (:mod:`.login`),
called again when the API answers 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Final, Self

import aiohttp
import kopf

from gelu_rollout.adapters.kube.kinds import Kind, kind_of
from gelu_rollout.adapters.kube.login import Login

Object = dict[str, Any]

FIELD_MANAGER: Final = "gelu-rollout"
"""The field manager of everything the operator applies (what `kubectl get --show-managed-fields`
names, and what a GitOps tool can be told to ignore)."""
MERGE_PATCH: Final = "application/merge-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"


class KubeError(RuntimeError):
    """The API server refused a request (``status`` is its HTTP status), or could not be
    reached (``status`` is None).

    ``reason`` is the API's own (``Forbidden``, ``Invalid``, ``Conflict`` ...); ``verb`` the
    request's (``get``, ``list``, ``create``, ``patch``, ``apply``, ``delete``; empty when
    not known): a 422 on a write means the object was refused, and retrying sends the same one.
    """

    def __init__(self, status: int | None, message: str, reason: str = "", verb: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.verb = verb


class KubeClient:
    """JSON objects in and out; 404 on a read is None, other refusals raise :class:`KubeError`.

    Use it as an async context manager, or call :meth:`close` when done.
    """

    def __init__(
        self,
        login: Login,
        *,
        timeout_seconds: float = 10.0,
        field_manager: str = FIELD_MANAGER,
    ) -> None:
        self._login = login
        self.timeout_seconds = timeout_seconds
        self.field_manager = field_manager
        self._session: aiohttp.ClientSession | None = None
        self._info: kopf.ConnectionInfo | None = None
        self._files: list[str] = []  # certificates given as data, written for the TLS context
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None
        for path in self._files:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._files.clear()

    # -- connection --------------------------------------------------------------------------

    async def _connect(self, stale: aiohttp.ClientSession | None = None) -> aiohttp.ClientSession:
        """The session to send with; a new login when there is none yet or ``stale`` failed."""
        async with self._lock:
            if self._session is not None and self._session is not stale:
                return self._session
            await self.close()
            self._info = info = await asyncio.to_thread(self._login)
            headers = {"Accept": "application/json"}
            if info.token:
                headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
            auth = (
                aiohttp.BasicAuth(info.username, info.password or "")
                if info.username and not info.token
                else None
            )
            self._session = aiohttp.ClientSession(
                base_url=str(info.server).rstrip("/") + "/",
                headers=headers,
                auth=auth,
                connector=aiohttp.TCPConnector(ssl=self._tls(info)),
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
                trust_env=info.trust_env,
            )
            return self._session

    def _tls(self, info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
        if info.insecure:
            return False
        ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        context = ssl.create_default_context(cafile=info.ca_path, cadata=ca_data or None)
        certificate = info.certificate_path or self._file(info.certificate_data)
        key = info.private_key_path or self._file(info.private_key_data)
        if certificate:
            context.load_cert_chain(certificate, key)
        return context

    def _file(self, data: str | bytes | None) -> str | None:
        if not data:
            return None
        if isinstance(data, str):
            data = data.encode()
        handle, path = tempfile.mkstemp(prefix="gelu-rollout-", suffix=".pem")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        self._files.append(path)
        return path

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """One API request: the status and the decoded body. Logs in again once on a 401."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        session: aiohttp.ClientSession | None = None
        for attempt in range(2):
            session = await self._connect(stale=session if attempt else None)
            try:
                async with session.request(
                    method, path.lstrip("/"), params=params, data=data, headers=headers
                ) as response:
                    raw = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                where = self._info.server if self._info is not None else "the API server"
                detail = str(error) or type(error).__name__
                message = f"the connection to the server {where} failed: {detail}"
                raise KubeError(None, message) from error
            if status != 401 or attempt:
                break
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode(errors="replace")
        return status, decoded

    @staticmethod
    def _check(status: int, data: Any, what: str) -> Any:
        """``data`` for a 2xx answer, else a :class:`KubeError`; ``what`` starts with the
        verb (``"apply Deployment ns/x"``), which the error keeps."""
        if 200 <= status < 300:
            return data
        message = data.get("message") if isinstance(data, Mapping) else data
        reason = str(data.get("reason") or "") if isinstance(data, Mapping) else ""
        verb = what.split(" ", 1)[0]
        raise KubeError(status, f"{what}: HTTP {status}: {message}", reason, verb)

    # -- verbs -------------------------------------------------------------------------------

    async def get(
        self, kind: Kind, namespace: str | None, name: str, *, subresource: str | None = None
    ) -> Object | None:
        status, data = await self.request("GET", kind.path(namespace, name, subresource))
        if status == 404:
            return None
        result: Object = self._check(status, data, f"get {kind.kind} {_where(namespace, name)}")
        return result

    async def list_versioned(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> tuple[list[Object], str]:
        """:meth:`list`, and the list's ``resourceVersion``: where a watch of the changes
        since goes on from."""
        params = {"labelSelector": label_selector} if label_selector else None
        status, data = await self.request("GET", kind.path(namespace), params=params)
        where = f"in {namespace}" if namespace is not None else "in all namespaces"
        found = self._check(status, data, f"list {kind.kind} {where}")
        items = found.get("items") if isinstance(found, Mapping) else None
        metadata = found.get("metadata") if isinstance(found, Mapping) else None
        version = str((metadata or {}).get("resourceVersion") or "")
        # List items may omit apiVersion and kind; callers compare objects by them.
        return [
            {"apiVersion": kind.api_version, "kind": kind.kind, **item}
            for item in items or []
            if isinstance(item, Mapping)
        ], version

    async def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> list[Object]:
        """The objects in ``namespace``, or in every namespace when it is None."""
        items, _ = await self.list_versioned(kind, namespace, label_selector)
        return items

    async def watch(
        self,
        kind: Kind,
        namespace: str | None,
        label_selector: str | None = None,
        resource_version: str | None = None,
        *,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, Object]]:
        """The changes after ``resource_version`` as ``(type, object)``: ``ADDED``,
        ``MODIFIED``, ``DELETED``, ``BOOKMARK`` or ``ERROR`` (a Status: 410 when the version
        is too old to resume from). Ends when the server closes the stream, after about
        ``timeout_seconds``; a refusal or a lost connection is a :class:`KubeError`."""
        params = {"watch": "true", "timeoutSeconds": str(timeout_seconds)}
        params["allowWatchBookmarks"] = "true"
        if label_selector:
            params["labelSelector"] = label_selector
        if resource_version:
            params["resourceVersion"] = resource_version
        where = f"in {namespace}" if namespace is not None else "in all namespaces"
        # No total limit: the stream lasts as long as the server keeps it; a silent one is
        # given up a little after the server should have closed it.
        limit = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.timeout_seconds,
            sock_read=timeout_seconds + self.timeout_seconds,
        )
        session = await self._connect()
        try:
            async with session.get(
                kind.path(namespace).lstrip("/"), params=params, timeout=limit
            ) as response:
                if response.status != 200:
                    raw = await response.read()
                    if response.status == 401:
                        await self._connect(stale=session)  # logged in again for the next one
                    try:
                        decoded = json.loads(raw) if raw else None
                    except ValueError:
                        decoded = raw.decode(errors="replace")
                    self._check(response.status, decoded, f"watch {kind.kind} {where}")
                # One JSON object a line; a line may be longer than aiohttp's line limit.
                pending = b""
                async for chunk in response.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            event = json.loads(line)
                            yield str(event.get("type")), dict(event.get("object") or {})
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            detail = str(error) or type(error).__name__
            raise KubeError(None, f"watch {kind.kind} {where}: {detail}", verb="watch") from error

    async def create(self, obj: Mapping[str, Any]) -> Object:
        kind, namespace, name = _identity(obj)
        status, data = await self.request("POST", kind.path(namespace), body=dict(obj))
        result: Object = self._check(status, data, f"create {kind.kind} {_where(namespace, name)}")
        return result

    async def merge_patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> Object:
        status, data = await self.request(
            "PATCH",
            kind.path(namespace, name, subresource),
            body=dict(patch),
            content_type=MERGE_PATCH,
            params={"fieldManager": self.field_manager},
        )
        result: Object = self._check(status, data, f"patch {kind.kind} {_where(namespace, name)}")
        return result

    async def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> Object:
        """Server-side apply: the object becomes ``obj`` in every field this client's field
        manager sets, and loses the fields it set before and no longer does. ``force`` takes
        over fields another manager changed (the operator owns what it renders)."""
        kind, namespace, name = _identity(obj)
        status, data = await self.request(
            "PATCH",
            kind.path(namespace, name),
            body=dict(obj),
            content_type=APPLY_PATCH,
            params={"fieldManager": self.field_manager, "force": "true" if force else "false"},
        )
        result: Object = self._check(status, data, f"apply {kind.kind} {_where(namespace, name)}")
        return result

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        """Delete an object; False if it was already gone."""
        status, data = await self.request("DELETE", kind.path(namespace, name))
        if status == 404:
            return False
        self._check(status, data, f"delete {kind.kind} {_where(namespace, name)}")
        return True


def _where(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _identity(obj: Mapping[str, Any]) -> tuple[Kind, str | None, str]:
    kind = kind_of(obj)
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace") if kind.namespaced else None
    return kind, (str(namespace) if namespace is not None else None), str(metadata.get("name"))

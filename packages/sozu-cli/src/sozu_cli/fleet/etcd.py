"""A small etcd v3 client over etcd's JSON gateway (``/v3/…``, served by etcd 3.4 and later),
with aiohttp: reads, guarded transactions, leases and the watch stream — what a fleet needs,
nothing more.

The gateway speaks the gRPC API as JSON: keys and values are base64, 64-bit integers are
strings, fields with their default value (0, false, ``PUT``) are left out. A watch is one
streaming POST answered with one JSON object per line.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

__all__ = [
    "EtcdClient",
    "EtcdCompacted",
    "EtcdError",
    "EtcdUnreachable",
    "KeyValue",
    "WatchEvent",
    "encode",
    "prefix_end",
]

REQUEST_TIMEOUT = 5.0
"""Seconds an ordinary request (not a watch) waits for etcd."""


class EtcdError(Exception):
    """etcd answered with an error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EtcdUnreachable(EtcdError):
    """No etcd answers at the endpoint (refused, reset, timed out), or a watch stream ended.
    ``sent``: whether the request may have reached etcd (false when the connection could not
    even be made: then it is safe to send it to another endpoint)."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class EtcdCompacted(EtcdError):
    """A watch asked to start at a revision etcd has compacted away: read again from now."""


def encode(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _decode(data: str | None) -> bytes:
    return base64.b64decode(data or "")


def prefix_end(prefix: str) -> str:
    """The end of the key range of every key starting with ``prefix`` (its last byte plus
    one: keys here are ASCII paths ending with ``/``)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyValue:
        return cls(
            key=_decode(data.get("key")).decode("utf-8", "replace"),
            value=_decode(data.get("value")),
            mod_revision=int(data.get("mod_revision", 0)),
            create_revision=int(data.get("create_revision", 0)),
            lease=int(data.get("lease", 0)),
        )


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: str
    """``PUT`` or ``DELETE``."""
    key: str
    revision: int


_CLIENT_CERTIFICATE_REFUSED = frozenset(
    {"SSLV3_ALERT_BAD_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED", "TLSV1_ALERT_UNKNOWN_CA"}
)


def _tls_error(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a connection error, if one is."""
    seen: BaseException | None = error
    for _ in range(4):  # the error, what it wraps, and so on: a short chain
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return None


class EtcdClient:
    """A client of the members of one etcd cluster (``http://HOST:PORT`` each), using one at a
    time and the next one when it cannot be reached; use as ``async with``."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float = REQUEST_TIMEOUT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        given = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.tls: ssl.SSLContext | bool = True if tls is None else tls
        """The context of ``https://`` endpoints (aiohttp's default: the system's CAs)."""
        self.endpoints = [endpoint.rstrip("/") for endpoint in given]
        if not self.endpoints:
            raise ValueError("EtcdClient needs at least one endpoint")
        self.timeout = timeout
        self._current = 0
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        """The member in use."""
        return self.endpoints[self._current]

    def _next_endpoint(self) -> None:
        self._current = (self._current + 1) % len(self.endpoints)

    async def __aenter__(self) -> EtcdClient:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("EtcdClient is used outside of 'async with'")
        return self._session

    def _unreachable(self, error: BaseException) -> EtcdUnreachable:
        reason = str(error) or type(error).__name__
        sent = not isinstance(error, aiohttp.ClientConnectorError)
        if isinstance(error, TimeoutError):
            reason = f"no answer within {self.timeout:g} s"
        elif isinstance(error, aiohttp.ClientConnectorCertificateError):
            reason = (
                f"its certificate is refused: {error.certificate_error} (--etcd-ca names the CA "
                "that signed it)"
            )
        elif (refused := _tls_error(error)) is not None:
            reason = f"the TLS handshake failed: {refused.reason or refused}"
            if refused.reason in _CLIENT_CERTIFICATE_REFUSED:
                reason += " (etcd refused this client's certificate, or wants one: --etcd-cert)"
        elif isinstance(error, aiohttp.ClientConnectorError):
            number = error.os_error.errno
            reason = os.strerror(number) if number else reason
        elif isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            reason = "the connection was closed"
        return EtcdUnreachable(f"etcd at {self.endpoint} is unreachable: {reason}", sent=sent)

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one request to the gateway and return its answer. A request that could not be
        sent is sent to the next member (each tried once); one that may have been received is
        not sent again (a transaction must not run twice), but the next request goes to the
        next member."""
        for attempt in range(len(self.endpoints)):
            try:
                return await self._call_once(path, body)
            except EtcdUnreachable as error:
                self._next_endpoint()
                if error.sent or attempt == len(self.endpoints) - 1:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _call_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self.session.post(
                f"{self.endpoint}{path}",
                json=body,
                ssl=self.tls,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise self._unreachable(error) from None
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise EtcdError(
                f"etcd at {self.endpoint} answered {path} with something that is not a JSON "
                f"object (HTTP {response.status}): {text[:200]!r}"
            )
        if response.status != 200 or "error" in answer:
            message = answer.get("message") or answer.get("error") or text[:200]
            raise EtcdError(f"etcd at {self.endpoint} refused {path}: {message}")
        return answer

    # ------------------------------------------------------------------ keys

    async def range(
        self, key: str, *, prefix: bool = False, revision: int = 0
    ) -> tuple[int, list[KeyValue]]:
        """(the store's revision, the key — or every key under ``prefix`` — with values)."""
        body: dict[str, Any] = {"key": encode(key)}
        if prefix:
            body["range_end"] = encode(prefix_end(key))
        if revision:
            body["revision"] = str(revision)
        answer = await self.call("/v3/kv/range", body)
        kvs = [KeyValue.from_json(kv) for kv in answer.get("kvs", [])]
        return int(answer["header"]["revision"]), kvs

    async def put(self, key: str, value: str | bytes, *, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": encode(key), "value": encode(value)}
        if lease:
            body["lease"] = str(lease)
        answer = await self.call("/v3/kv/put", body)
        return int(answer["header"]["revision"])

    async def txn(
        self, compare: Sequence[dict[str, Any]], success: Sequence[dict[str, Any]]
    ) -> tuple[bool, int]:
        """Run ``success`` when every ``compare`` holds: (whether it ran, the store's revision
        after it)."""
        answer = await self.call("/v3/kv/txn", {"compare": list(compare), "success": list(success)})
        return bool(answer.get("succeeded", False)), int(answer["header"]["revision"])

    # ------------------------------------------------------------------ leases

    async def grant(self, ttl: int) -> int:
        answer = await self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(answer["ID"])

    async def keep_alive(self, lease: int) -> int:
        """Renew a lease once: its new time to live, 0 when it has expired."""
        answer = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        await self.call("/v3/lease/revoke", {"ID": str(lease)})

    # ------------------------------------------------------------------ watch

    async def watch(
        self, key: str, range_end: str, *, start_revision: int
    ) -> AsyncIterator[list[WatchEvent]]:
        """The changes of the keys from ``key`` to ``range_end`` (excluded) from
        ``start_revision`` on, one list per answer of etcd, until the stream breaks
        (:class:`EtcdUnreachable`) or the revision is compacted (:class:`EtcdCompacted`)."""
        request = {
            "create_request": {
                "key": encode(key),
                "range_end": encode(range_end),
                "start_revision": str(start_revision),
            }
        }
        try:
            async with self.session.post(
                f"{self.endpoint}/v3/watch",
                json=request,
                ssl=self.tls,
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout),
            ) as response:
                if response.status != 200:
                    raise EtcdError(f"etcd refused the watch: HTTP {response.status}")
                pending = b""
                async for chunk in response.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            events = self._watch_answer(line)
                            if events:
                                yield events
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            unreachable = self._unreachable(error)
            self._next_endpoint()  # the watch is made again on the next member
            raise unreachable from None
        ended = EtcdUnreachable(f"etcd at {self.endpoint} is unreachable: the watch stream ended")
        self._next_endpoint()
        raise ended

    def _watch_answer(self, line: bytes) -> list[WatchEvent]:
        try:
            answer = json.loads(line)
        except json.JSONDecodeError:
            raise EtcdError(f"etcd sent a watch answer that is not JSON: {line[:200]!r}") from None
        if "error" in answer:
            error = answer["error"]
            raise EtcdError(f"etcd ended the watch: {error.get('message', error)}")
        result = answer.get("result", {})
        if int(result.get("compact_revision", 0)):
            raise EtcdCompacted(
                f"etcd compacted revisions up to {result['compact_revision']}: reading again"
            )
        if result.get("canceled"):
            raise EtcdError(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
        return [
            WatchEvent(
                kind=event.get("type", "PUT"),
                key=_decode(event.get("kv", {}).get("key")).decode("utf-8", "replace"),
                revision=int(event.get("kv", {}).get("mod_revision", 0)),
            )
            for event in result.get("events", [])
        ]

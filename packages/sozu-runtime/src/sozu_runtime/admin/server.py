"""The HTTP admin endpoint: an aiohttp application on the main process's event loop.

It is read-only: every answer comes from a query the main process executes (see
:mod:`.source`), so serving it never changes the proxy and never runs in a worker. Its
listening socket is not inheritable: workers started later do not hold it.

Endpoints (``GET``, and ``HEAD``): ``/metrics`` (Prometheus, see :mod:`.prometheus`),
``/healthz``, ``/api/v1/status``, ``/api/v1/state``, ``/api/v1/clusters``,
``/api/v1/clusters/{id}``, ``/api/v1/backends`` (each backend's health; ``?cluster_id=`` for
one cluster's). Any other path is a 404, any other method a 405; errors are JSON
documents ``{"error": "..."}``. With a token, every request must carry
``Authorization: Bearer <token>`` (else 401 with ``WWW-Authenticate: Bearer``).

Limits: bodies of at most :data:`MAX_BODY` bytes, request lines and header fields of at most
:data:`MAX_LINE` bytes, :data:`MAX_HEADERS` header fields, :data:`MAX_IN_FLIGHT` requests
served at once (others get a 503 at once).
"""

from __future__ import annotations

import hmac
import logging
import socket
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from sozu_config import requests as rq
from sozu_config.addresses import split_address
from sozu_config.config import AdminSettings
from sozu_config.responses import (
    BackendsContent,
    ClustersContent,
    ErrorKind,
    MetricsContent,
    Response,
    StateContent,
    WorkersContent,
)

from . import api
from .prometheus import CONTENT_TYPE, render
from .source import MainProcess, Questions

log = logging.getLogger("sozu.admin")

__all__ = ["HEALTH_TIMEOUT", "AdminListenError", "AdminServer"]

HEALTH_TIMEOUT: Final = 2.0
"""Seconds each worker has to answer the ``status`` of ``/healthz`` and ``/api/v1/status``."""
MAX_BODY: Final = 1_024
MAX_LINE: Final = 4_096
MAX_HEADERS: Final = 64
MAX_IN_FLIGHT: Final = 32
BACKLOG: Final = 64
STOP_TIMEOUT: Final = 2.0
"""Seconds a stop waits for the requests in flight."""


class AdminListenError(Exception):
    """The endpoint's address cannot be listened on (``str``: which, and why)."""


class AdminServer:
    """The admin endpoint of one main process: :meth:`start`, then :meth:`stop`."""

    def __init__(
        self, settings: AdminSettings, main: MainProcess, *, expected_workers: int
    ) -> None:
        self.settings = settings
        self.questions = Questions(main)
        self.expected_workers = expected_workers
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        """Where it listens (``IP:port``)."""
        return self.settings.address

    def application(self) -> web.Application:
        """The aiohttp application (routes and middlewares), not yet listening."""
        middlewares = [_busy_limit(MAX_IN_FLIGHT), _json_errors]
        if self.settings.token is not None:
            middlewares.insert(0, _bearer_token(self.settings.token))
        app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
        views = _Views(self.questions, self.expected_workers)
        app.router.add_get("/metrics", views.metrics)
        app.router.add_get("/healthz", views.healthz)
        app.router.add_get("/api/v1/status", views.status)
        app.router.add_get("/api/v1/state", views.state)
        app.router.add_get("/api/v1/clusters", views.clusters)
        app.router.add_get("/api/v1/clusters/{cluster_id}", views.cluster)
        app.router.add_get("/api/v1/backends", views.backends)
        return app

    async def start(self) -> None:
        """Listen and serve. Raises :class:`AdminListenError` when the address is refused."""
        sock = _listening_socket(self.address)
        runner = web.AppRunner(
            self.application(),
            handle_signals=False,
            shutdown_timeout=STOP_TIMEOUT,
            access_log=None,
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
            max_headers=MAX_HEADERS,
        )
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("admin endpoint on http://%s", self.address)

    async def stop(self) -> None:
        """Stop listening and drop the requests in flight."""
        runner, self._runner = self._runner, None
        await self.questions.close()
        if runner is not None:
            await runner.cleanup()


def _listening_socket(address: str) -> socket.socket:
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.set_inheritable(False)  # the workers started later must not hold it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise AdminListenError(
            f"cannot listen on {address} for the admin endpoint: {error.strerror or error}"
        ) from None
    return sock


# --------------------------------------------------------------------------- middlewares


def _bearer_token(token: str) -> Any:
    expected = token.encode()

    @web.middleware
    async def bearer_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _refused(
                "this endpoint needs Authorization: Bearer <token>", 'Bearer realm="sozu"'
            )
        if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected):
            return _refused(
                "the bearer token is wrong", 'Bearer realm="sozu", error="invalid_token"'
            )
        return await handler(request)

    return bearer_token


def _refused(message: str, challenge: str) -> web.Response:
    return web.json_response(
        {"error": message}, status=401, headers={"WWW-Authenticate": challenge}
    )


def _busy_limit(limit: int) -> Any:
    in_flight = 0

    @web.middleware
    async def busy_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        if in_flight >= limit:
            return web.json_response(
                {"error": f"more than {limit} requests at once"},
                status=503,
                headers={"Retry-After": "1"},
            )
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return busy_limit


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (404, 405, 413…) as JSON documents, headers kept; an
    unexpected error is logged and answered 500."""
    try:
        return await handler(request)
    except Exception as error:
        if not isinstance(error, web.HTTPException):
            log.exception("admin endpoint: %s %s failed", request.method, request.path)
            return web.json_response({"error": "internal error (see the log)"}, status=500)
        if error.status < 400:
            raise
        headers = {
            k: v
            for k, v in error.headers.items()
            if k.lower() not in ("content-type", "content-length")
        }
        return web.json_response(
            {"error": error.reason.lower()}, status=error.status, headers=headers
        )


# --------------------------------------------------------------------------- views


def _unavailable(response: Response) -> web.Response:
    return web.json_response({"error": response.message}, status=503)


class _Views:
    """The handlers: each asks its questions, then answers with :mod:`.api`'s documents."""

    def __init__(self, questions: Questions, expected_workers: int) -> None:
        self.questions = questions
        self.expected_workers = expected_workers

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        response = await self.questions.ask(rq.QueryMetrics(workers=True))
        if not isinstance(response.content, MetricsContent):
            return _unavailable(response)
        return web.Response(
            body=render(response.content).encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        response = await self.questions.status(HEALTH_TIMEOUT)
        if not isinstance(response.content, WorkersContent):
            return web.json_response(
                {"status": "failing", "workers": {}, "error": response.message}, status=503
            )
        healthy, document = api.health_view(
            response.content, self.expected_workers, stopping=self.questions.stopping
        )
        return web.json_response(document, status=200 if healthy else 503)

    async def status(self, request: web.Request) -> web.StreamResponse:
        response = await self.questions.status(HEALTH_TIMEOUT)
        if not isinstance(response.content, WorkersContent):
            return _unavailable(response)
        return web.json_response(api.status_view(response.content, response.message))

    async def state(self, request: web.Request) -> web.StreamResponse:
        response = await self.questions.ask(rq.QueryState())
        if not isinstance(response.content, StateContent):
            return _unavailable(response)
        return web.json_response(api.state_view(response.content))

    async def clusters(self, request: web.Request) -> web.StreamResponse:
        state = await self.questions.ask(rq.QueryState())
        if not isinstance(state.content, StateContent):
            return _unavailable(state)
        metrics = await self.questions.ask(rq.QueryMetrics(metric_names=list(api.REQUEST_TOTALS)))
        if not isinstance(metrics.content, MetricsContent):
            return _unavailable(metrics)
        return web.json_response(api.clusters_view(state.content.state, metrics.content))

    async def cluster(self, request: web.Request) -> web.StreamResponse:
        cluster_id = request.match_info["cluster_id"]
        try:
            query = rq.QueryClusterById(cluster_id=cluster_id)
        except ValidationError:  # not a valid id: no cluster has it
            return _unknown_cluster(cluster_id)
        found = await self.questions.ask(query)
        if not isinstance(found.content, ClustersContent):
            return _unavailable(found)
        information = found.content.clusters[0] if found.content.clusters else None
        if information is None or information.cluster is None:
            return _unknown_cluster(cluster_id)
        metrics = await self.questions.ask(rq.QueryMetrics(cluster_ids=[cluster_id]))
        if not isinstance(metrics.content, MetricsContent):
            return _unavailable(metrics)
        return web.json_response(api.cluster_view(information, metrics.content))

    async def backends(self, request: web.Request) -> web.StreamResponse:
        cluster_id = request.query.get("cluster_id")
        try:
            query = rq.ListBackends(cluster_id=cluster_id)
        except ValidationError:  # not a valid id: no cluster has it
            return _unknown_cluster(str(cluster_id))
        answer = await self.questions.ask(query)
        if answer.kind == ErrorKind.NOT_FOUND and cluster_id is not None:
            return _unknown_cluster(cluster_id)
        if not isinstance(answer.content, BackendsContent):
            return _unavailable(answer)
        return web.json_response(answer.content.model_dump(mode="json", exclude={"type"}))


def _unknown_cluster(cluster_id: str) -> web.Response:
    return web.json_response({"error": f"no cluster {cluster_id!r}"}, status=404)

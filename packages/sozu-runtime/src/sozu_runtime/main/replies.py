"""The answers the main process builds: :func:`ok` and :func:`fail`.

Every failure the main process answers or records (a refused request, a worker that did not
answer, a connection refused on the command socket) is built by :func:`fail`, so that what a
failure carries is decided in one place.
"""

from __future__ import annotations

from sozu_config.responses import Response, ResponseContent, ResponseStatus

__all__ = ["fail", "ok", "progress"]


def ok(message: str = "", *, content: ResponseContent | None = None) -> Response:
    """A success (its ``id`` is set when it is sent)."""
    return Response(id="", status=ResponseStatus.OK, message=message, content=content)


def fail(message: str, *, content: ResponseContent | None = None, request_id: str = "") -> Response:
    """A failure saying why (``request_id``: when it is known where the failure is built)."""
    return Response(id=request_id, status=ResponseStatus.FAILURE, message=message, content=content)


def progress(request_id: str, message: str, *, content: ResponseContent | None = None) -> Response:
    """A ``processing`` answer: more follows for ``request_id``."""
    return Response(
        id=request_id, status=ResponseStatus.PROCESSING, message=message, content=content
    )

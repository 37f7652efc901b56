"""The answers the main process builds: :func:`ok` and :func:`fail`.

Every failure the main process answers or records (a refused request, a worker that did not
answer, a connection refused on the command socket) is built by :func:`fail` (or, for a
refusal of the state, :func:`sozu_config.state.failure_from`), so that what a failure carries
is decided in one place: the message for people, and the :class:`ErrorKind` (with, for a
batch, the index of the request at fault) for programs.
"""

from __future__ import annotations

from sozu_config.responses import ErrorKind, Response, ResponseContent, ResponseStatus

__all__ = ["fail", "ok", "progress"]


def ok(message: str = "", *, content: ResponseContent | None = None) -> Response:
    """A success (its ``id`` is set when it is sent)."""
    return Response(id="", status=ResponseStatus.OK, message=message, content=content)


def fail(
    message: str,
    *,
    kind: ErrorKind,
    index: int | None = None,
    content: ResponseContent | None = None,
    request_id: str = "",
) -> Response:
    """A failure saying why: ``message`` for people, ``kind`` for programs, ``index`` the
    position of the request at fault in a batch (``request_id``: when it is known where the
    failure is built)."""
    return Response.failure(message, kind=kind, index=index, content=content, id=request_id)


def progress(request_id: str, message: str, *, content: ResponseContent | None = None) -> Response:
    """A ``processing`` answer: more follows for ``request_id``."""
    return Response(
        id=request_id, status=ResponseStatus.PROCESSING, message=message, content=content
    )

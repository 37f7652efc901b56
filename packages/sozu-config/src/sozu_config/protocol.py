"""The command protocol: JSON lines on a unix socket.

Each message is one JSON object on one line (UTF-8, ``\\n``-terminated). A client sends
:class:`RequestMessage` envelopes and reads :class:`~sozu_config.responses.Response` objects with
the same ``id`` until one is final (``ok`` or ``failure``). A connection may carry several
requests in sequence. Lines longer than the agreed maximum are refused; the reader never grows
its buffer beyond it. The JSON Schema of both envelopes is generated from these models
(``python -m sozu_config.schema``) so that any language can speak the protocol.

Example with standard tools::

    echo '{"id":"1","request":{"type":"status"}}' | socat - UNIX-CONNECT:sozu.sock
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError, field_validator

from .models import Model
from .requests import Request
from .responses import ErrorKind, Response

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "PROTOCOL_VERSION",
    "LineReader",
    "MessageTooLarge",
    "ProtocolError",
    "RequestMessage",
    "build_validators",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "validation_message",
]

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
"""Largest message accepted by default (a 10,000-cluster batch is a few MB)."""


class ProtocolError(Exception):
    """The peer sent something that is not a valid message. ``request_id`` is the id of the
    offending request when it could be read (so the answer can carry it); ``kind`` is what
    the answer's ``kind`` says."""

    kind: ErrorKind = ErrorKind.BAD_REQUEST

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class MessageTooLarge(ProtocolError):
    """A line longer than the maximum message size."""

    kind = ErrorKind.LIMIT


class RequestMessage(Model):
    """A request envelope: the client's ``id`` and the request."""

    id: str = Field(min_length=1, max_length=256)
    version: int = PROTOCOL_VERSION
    """The protocol version the client speaks; only this version is accepted."""
    request: Request

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != PROTOCOL_VERSION:
            raise ValueError(
                f"unsupported protocol version {value} (this side speaks {PROTOCOL_VERSION})"
            )
        return value


_REQUEST_MESSAGE: TypeAdapter[RequestMessage] = TypeAdapter(RequestMessage)
_RESPONSE: TypeAdapter[Response] = TypeAdapter(Response)


def build_validators() -> None:
    """Build now the validators of the request envelope and of the answers, otherwise built
    at their first use (the models are ``defer_build``): a daemon calls this before it
    listens, so that its first command is not slower than the others. Idempotent."""
    if not Response.__pydantic_complete__:
        Response.model_rebuild(force=True)
    for adapter in (_REQUEST_MESSAGE, _RESPONSE):
        if not adapter.pydantic_complete:
            adapter.rebuild(force=True)


def validation_message(error: ValidationError, *, limit: int = 3) -> str:
    """A short human summary of a pydantic error (no input dump, which may hold keys)."""
    parts = []
    for item in error.errors()[:limit]:
        location = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    more = len(error.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def encode_request(request: Any, request_id: str) -> bytes:
    """One line holding ``request`` (a request model) with ``request_id``."""
    body: str = request.model_dump_json()
    return b'{"id":' + json.dumps(request_id).encode() + b',"request":' + body.encode() + b"}\n"


def decode_request(line: bytes | str) -> RequestMessage:
    """Parse one request line; raises :class:`ProtocolError` saying what is wrong, and
    nothing else whatever the line holds (nesting too deep for the parser included)."""
    try:
        return _REQUEST_MESSAGE.validate_json(line)
    except ValidationError as error:
        request_id = _readable_id(line)
        if error.error_count() and error.errors()[0]["type"] == "json_invalid":
            raise ProtocolError("the message is not valid JSON", request_id) from None
        raise ProtocolError(f"invalid request: {validation_message(error)}", request_id) from None
    except (RecursionError, MemoryError, UnicodeError):
        raise ProtocolError("the message is not valid JSON (nested too deeply)") from None


def _readable_id(line: bytes | str) -> str | None:
    """The ``id`` of a refused request, when it can be read and echoed back as is (a valid
    string of at most 256 characters: a lone surrogate could not be encoded in the answer)."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(raw, dict):
        return None
    request_id = raw.get("id")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 256:
        return None
    try:
        request_id.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return request_id


def encode_response(response: Response) -> bytes:
    return response.model_dump_json(exclude_none=True).encode() + b"\n"


def decode_response(line: bytes | str) -> Response:
    try:
        return _RESPONSE.validate_json(line)
    except ValidationError as error:
        raise ProtocolError(
            f"invalid response from the daemon: {validation_message(error)}"
        ) from None


class LineReader:
    """Splits a byte stream into lines, refusing any line longer than ``max_size``.

    Sans-I/O: ``feed`` takes what was read and returns the complete lines (without ``\\n``).
    After a :class:`MessageTooLarge` the stream cannot be resynchronised: close it.
    """

    __slots__ = ("_buffer", "_max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    @property
    def max_size(self) -> int:
        return self._max_size

    def feed(self, data: bytes) -> list[bytes]:
        start = len(self._buffer)
        self._buffer += data
        newline = self._buffer.find(b"\n", start)
        if newline < 0:
            if len(self._buffer) > self._max_size:
                self._buffer.clear()
                raise MessageTooLarge(
                    f"a message exceeds the maximum size of {self._max_size} bytes"
                )
            return []
        lines = self._buffer.split(b"\n")
        rest = lines.pop()
        self._buffer = bytearray(rest)
        out = []
        for line in lines:
            if len(line) > self._max_size:
                raise MessageTooLarge(
                    f"a message exceeds the maximum size of {self._max_size} bytes"
                )
            if line.strip():
                out.append(bytes(line))
        if len(self._buffer) > self._max_size:
            raise MessageTooLarge(f"a message exceeds the maximum size of {self._max_size} bytes")
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line held."""
        return len(self._buffer)

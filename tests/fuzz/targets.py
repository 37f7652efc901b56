"""What the fuzzing session feeds, and what each target must hold to.

Each target takes arbitrary bytes and may only fail with the error its parser documents:

* ``request_head``: :func:`h1.parse_request_head` raises :class:`h1.HttpError` or returns a
  head (or None: incomplete); the fast path :func:`h1.simple_request`, when it takes a head,
  agrees with the general parser; the chunked framing of what follows raises only HttpError.
* ``response_head``: the same for responses, :func:`h1.simple_response` included.
* ``proxy_protocol``: :func:`proxy_protocol.parse` raises only ProxyProtocolError, and a
  header it reads is rebuilt to itself (v2) or to the same endpoints (v1).
* ``command``: :func:`decode_request` raises only ProtocolError; any request it returns can be
  described and answered (its id echoed); :class:`LineReader` raises only MessageTooLarge.
* ``config``: :func:`load_config_text` raises only ConfigError.

Seeds (:func:`seeds`): the raw requests of sōzu's corpus, the sample configurations, and the
malformed cases of the test suite (refused requests and responses, broken backend answers,
command-socket garbage, bad PROXY headers, invalid configuration files).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from sozu_config.config import ConfigError, load_config_text
from sozu_config.protocol import (
    LineReader,
    MessageTooLarge,
    ProtocolError,
    decode_request,
    encode_response,
    failure,
)
from sozu_runtime.worker import h1, proxy_protocol

TESTS = Path(__file__).resolve().parent.parent
FIXTURES = TESTS / "fixtures"
MAX_HEAD = 16384


class Violation(AssertionError):
    """A target broke its contract (an undocumented exception is reported as itself)."""


# --------------------------------------------------------------------------- targets


def request_head(data: bytes) -> None:
    try:
        head = h1.parse_request_head(data, MAX_HEAD)
    except h1.HttpError as error:
        if error.status not in (400, 414, 431):
            raise Violation(f"request refused with {error.status}") from None
        head = None
    end = data.find(b"\r\n\r\n")
    if end >= 0 and end + 4 == len(data):
        simple = h1.simple_request(data, end)
        if simple is not None:
            if head is None:
                raise Violation("the fast path took a request the general parser refuses")
            method, target, host, version, _keep_alive, _start, _end = simple
            if (method, target, host, version) != (
                head.method,
                head.target,
                head.host,
                head.version,
            ):
                raise Violation("the fast path and the general parser disagree")
    if head is not None and head.chunked:
        try:
            h1.ChunkedTracker().feed(data, head.length)
        except h1.HttpError:
            pass


def response_head(data: bytes) -> None:
    try:
        head = h1.parse_response_head(data, MAX_HEAD)
    except h1.HttpError as error:
        if error.status != 502:
            raise Violation(f"response refused with {error.status}") from None
        head = None
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        simple = h1.simple_response(data, end)
        if simple is not None:
            if head is None:
                raise Violation("the fast path took a response the general parser refuses")
            if simple[0] != head.status:
                raise Violation("the fast path and the general parser disagree on the status")
    if head is not None:
        for method in (b"GET", b"HEAD", b"CONNECT"):
            h1.response_body_kind(head, method)
        if head.chunked:
            try:
                h1.ChunkedTracker().feed(data, head.length)
            except h1.HttpError:
                pass


def proxy_header(data: bytes) -> None:
    try:
        parsed = proxy_protocol.parse(data)
    except proxy_protocol.ProxyProtocolError:
        return
    if parsed is None:
        return
    header, consumed = parsed
    if not 0 < consumed <= len(data) or header.raw != bytes(data[:consumed]):
        raise Violation("the header's bytes are not what was consumed")


def command(data: bytes) -> None:
    try:
        message = decode_request(data)
    except ProtocolError as error:
        encode_response(failure(error.request_id or "", str(error)))
    else:
        message.request.describe()
        encode_response(failure(message.id, "answered"))
    reader = LineReader(max_size=4096)
    try:
        for line in reader.feed(data):
            try:
                decode_request(line)
            except ProtocolError:
                pass
    except MessageTooLarge:
        pass


def config(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        load_config_text(text, base_dir=FIXTURES / "configs")
    except ConfigError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "request_head": request_head,
    "response_head": response_head,
    "proxy_protocol": proxy_header,
    "command": command,
    "config": config,
}


# --------------------------------------------------------------------------- seeds


def _corpus_requests() -> Iterator[bytes]:
    """sōzu's raw HTTP requests (blank-line separated, LF endings), with CRLF endings too."""
    text = (FIXTURES / "sozu-data" / "lib__assets__http-requests.txt").read_bytes()
    for block in text.split(b"\n\n"):
        block = block.strip(b"\n")
        if block:
            yield block + b"\n\n"
            yield block.replace(b"\n", b"\r\n") + b"\r\n\r\n"


def _test_tables() -> dict[str, list[bytes]]:
    """The malformed cases the test suite already knows, by target."""
    sys.path.insert(0, str(TESTS))
    from e2e import test_command_socket, test_http_parsing
    from runtime import test_h1, test_proxy_protocol

    return {
        "request_head": [
            *test_h1.REFUSED_REQUESTS.values(),
            *test_h1.INCREMENTAL_REQUESTS,
            *(raw for raw, _ in test_http_parsing.REFUSED_REQUESTS.values()),
        ],
        "response_head": [
            *test_h1.REFUSED_RESPONSES.values(),
            *test_h1.INCREMENTAL_RESPONSES,
            *test_http_parsing.BROKEN_ANSWERS.values(),
        ],
        "proxy_protocol": [
            *test_proxy_protocol.VECTORS,
            *test_proxy_protocol.MALFORMED.values(),
            *test_proxy_protocol.CERTAIN_EARLY.values(),
        ],
        "command": [line for line, _ in test_command_socket.GARBAGE.values()],
        "config": [],
    }


def seeds(target: str) -> list[bytes]:
    found = list(_test_tables()[target])
    if target == "request_head":
        found += _corpus_requests()
    elif target == "command":
        found += [
            b'{"id":"1","request":{"type":"status"}}\n',
            b'{"id":"2","request":{"type":"add_cluster","cluster":{"cluster_id":"a"}}}\n',
            b'{"id":"3","request":{"type":"batch","requests":[{"type":"remove_cluster",'
            b'"cluster_id":"a"}]}}\n',
        ]
    elif target == "config":
        found += [path.read_bytes() for path in sorted((FIXTURES / "configs").rglob("*.toml"))]
        found += [
            path.read_bytes() for path in sorted((FIXTURES / "sozu-data").glob("*config.toml"))
        ]
    elif target == "response_head":
        found += [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: upgrade\r\n\r\n",
        ]
    return [seed for seed in found if seed]

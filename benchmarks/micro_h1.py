"""Micro-benchmark of the HTTP/1.1 head parsers and body framing (worker/h1.py).

Run with ``python benchmarks/micro_h1.py``; prints microseconds per call of each hot-path
function, best of several repeats (the minimum is the least disturbed by other processes).
Nothing is asserted: this is for comparing changes on one machine, not a test.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from pathlib import Path

from sozu_runtime.worker.h1 import (
    ChunkedTracker,
    parse_request_head,
    parse_response_head,
    request_body_kind,
    response_body_kind,
)

CORPUS = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "fixtures"
    / "sozu-data"
    / "lib__assets__http-requests.txt"
)
MAX_HEAD = 16384
REPEATS = 7


def browser_request() -> bytes:
    """A request from the reference corpus (a browser's, 7 fields), or a similar one."""
    if CORPUS.exists():
        text = CORPUS.read_bytes().replace(b"\r\n", b"\n")
        block = text.split(b"\n\n")[1].strip(b"\n")
        return block.replace(b"\n", b"\r\n") + b"\r\n\r\n"
    return (
        b"GET /reddit.v_EZwRzV-Ns.css HTTP/1.1\r\n"
        b"Host: www.redditstatic.com\r\n"
        b"User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10.8; rv:15.0) Gecko/20100101\r\n"
        b"Accept: text/css,*/*;q=0.1\r\n"
        b"Accept-Language: en-us,en;q=0.5\r\n"
        b"Accept-Encoding: gzip, deflate\r\n"
        b"Connection: keep-alive\r\n"
        b"Referer: http://www.reddit.com/\r\n\r\n"
    )


MINIMAL_REQUEST = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Server: backend\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Length: 1234\r\n"
    b"Connection: keep-alive\r\n\r\n"
)
CHUNKED_BODY_64 = b"".join(b"400\r\n" + bytes(1024) + b"\r\n" for _ in range(64)) + b"0\r\n\r\n"
ONE_CHUNK_1MIB = b"100000\r\n" + bytes(1 << 20) + b"\r\n0\r\n\r\n"


def per_call_us(function: Callable[[], object]) -> float:
    """Best time of one call in microseconds, with a call count sized to about 0.2 s."""
    timer = timeit.Timer(function)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=REPEATS, number=number)) / number * 1e6


def feed_whole(body: bytes) -> Callable[[], int]:
    view = memoryview(body)

    def run() -> int:
        return ChunkedTracker().feed(view)

    return run


def feed_in_pieces(body: bytes, piece: int) -> Callable[[], int]:
    view = memoryview(body)
    bounds = list(range(0, len(body), piece))

    def run() -> int:
        tracker = ChunkedTracker()
        end = -1
        for start in bounds:
            end = tracker.feed(view[start : start + piece])
        return end

    return run


def main() -> None:
    browser = browser_request()
    browser_head = parse_request_head(browser, MAX_HEAD)
    response_head = parse_response_head(RESPONSE, MAX_HEAD)
    assert browser_head is not None and response_head is not None
    half = browser[: len(browser) // 2]
    cases: list[tuple[str, Callable[[], object]]] = [
        (
            f"parse_request_head (browser, {len(browser_head.headers)} fields)",
            lambda: parse_request_head(browser, MAX_HEAD),
        ),
        ("parse_request_head (minimal)", lambda: parse_request_head(MINIMAL_REQUEST, MAX_HEAD)),
        ("parse_request_head (incomplete)", lambda: parse_request_head(half, MAX_HEAD)),
        ("RequestHead.forward_headers (browser)", browser_head.forward_headers),
        ("request_body_kind", lambda: request_body_kind(browser_head)),
        ("parse_response_head (5 fields)", lambda: parse_response_head(RESPONSE, MAX_HEAD)),
        ("ResponseHead.forward_headers", response_head.forward_headers),
        ("response_body_kind", lambda: response_body_kind(response_head, b"GET")),
        ("ChunkedTracker.feed (64 x 1 KiB chunks, one call)", feed_whole(CHUNKED_BODY_64)),
        ("ChunkedTracker.feed (1 MiB chunk, one call)", feed_whole(ONE_CHUNK_1MIB)),
        (
            "ChunkedTracker.feed (1 MiB chunk, 16 KiB reads, whole body)",
            feed_in_pieces(ONE_CHUNK_1MIB, 16384),
        ),
    ]
    width = max(len(name) for name, _ in cases)
    for name, function in cases:
        print(f"{name:<{width}}  {per_call_us(function):9.3f} µs")


if __name__ == "__main__":
    main()

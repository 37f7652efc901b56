"""Access logs: one entry per answered exchange (HTTP) or per ended TCP session, built only
when access logs are on, and written as one line (``ascii`` or ``json``).

Two forms (``access_logs_format``):

* ``ascii``: sōzu's line (reference §I.3), ``<RFC 3339 µs UTC> <unix ns> <pid> INFO-ACCESS
  <TAG>\t`` then :func:`ascii_message`; ``ERROR-ACCESS`` for a 5xx answer the proxy gave
  itself;
* ``json``: one JSON object per line, fields named plainly, unknown values null
  (:func:`format_json`).

:class:`AccessLogWriter` keeps the data path free of I/O and of formatting: an entry is
kept in memory, and :data:`FLUSH_DELAY` after the first one (at once when the buffer passes
:data:`FLUSH_BYTES`, entries reckoned :data:`ENTRY_SIZE` each) the batch is formatted in one
loop and goes out in one write: ``os.write`` on an ``O_APPEND``
descriptor for a ``file://`` target (the page cache, never an fsync), one datagram per line
for ``udp://`` and ``unix://``, a non-blocking stream for ``tcp://``. Memory is bounded: past
:data:`MAX_BUFFERED` bytes waiting (lines not yet written, and what a stream could not take),
new lines are dropped and counted (:attr:`AccessLogWriter.dropped`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _quote
from typing import TYPE_CHECKING

from ..logs import LineSocket, line_socket

if TYPE_CHECKING:
    from .exchange import Exchange
    from .metrics import Sample

__all__ = [
    "ENTRY_SIZE",
    "FLUSH_BYTES",
    "FLUSH_DELAY",
    "MAX_BUFFERED",
    "AccessEntry",
    "AccessLogWriter",
    "ascii_message",
    "exchange_entry",
    "field_value",
    "format_ascii",
    "format_duration",
    "format_json",
    "rfc3339",
]

FLUSH_BYTES = 64 * 1024  # a buffer this large is written at once, without waiting
FLUSH_DELAY = 0.05  # seconds a line waits at most before it is written
ENTRY_SIZE = 512  # characters an entry is reckoned to take until it is formatted
MAX_BUFFERED = 1024 * 1024  # bytes waiting to be written; lines beyond are dropped
RETRY_DELAY = 0.1  # seconds before trying again to send what a stream did not take


class AccessEntry:
    """What an access-log line says about one exchange (or one TCP session).

    Times are integers: ``time_ns`` is the wall clock (ns since the epoch) when the exchange
    ended; ``request_time_us`` from the request's first byte to the answer's last byte;
    ``service_time_us`` the time the proxy spent itself (waits for the backend left out);
    ``response_time_us`` from the request sent to the first byte of the answer (-1: no
    backend answered). Strings are empty when unknown (``-`` in the ascii form, null in JSON);
    ``status`` is 0 for a TCP session. ``protocol``: ``HTTP``, ``HTTPS``, ``TCP`` …;
    ``tls_version``/``tls_cipher``/``tls_sni`` on TLS connections; ``tags``: the frontend's
    tags; ``message``: why the proxy answered itself (empty otherwise).
    """

    __slots__ = (
        "authority",
        "backend_address",
        "backend_id",
        "bytes_in",
        "bytes_out",
        "client_address",
        "client_port",
        "cluster_id",
        "message",
        "method",
        "path",
        "protocol",
        "request_id",
        "request_time_us",
        "response_time_us",
        "service_time_us",
        "session_id",
        "status",
        "tags",
        "time_ns",
        "tls_cipher",
        "tls_sni",
        "tls_version",
        "user_agent",
    )

    def __init__(self) -> None:
        self.time_ns = 0
        self.session_id = ""
        self.request_id = ""
        self.cluster_id = ""
        self.backend_id = ""
        self.backend_address = ""
        self.client_address = ""
        self.client_port = 0
        self.protocol = ""
        self.method = ""
        self.authority = ""
        self.path = ""
        self.status = 0
        self.message = ""
        self.request_time_us = 0
        self.service_time_us = 0
        self.response_time_us = -1
        self.bytes_in = 0
        self.bytes_out = 0
        self.user_agent = ""
        self.tls_version = ""
        self.tls_cipher = ""
        self.tls_sni = ""
        self.tags: dict[str, str] = {}


# ---------------------------------------------------------------------------------- formats


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def rfc3339(time_ns: int) -> str:
    """``2026-12-03T14:59:43.123456Z``: RFC 3339, UTC, microseconds (sōzu's log time)."""
    seconds, ns = divmod(time_ns, 1_000_000_000)
    return f"{_second(seconds)}.{ns // 1000:06d}Z"


def format_duration(us: int) -> str:
    """sōzu's duration (reference §I.3): whole seconds from 10 s, whole milliseconds from
    10 ms, whole microseconds from 10 µs, else nanoseconds; ``-`` when unknown (negative)."""
    if us >= 10_000_000:
        return f"{us // 1_000_000}s"
    if us >= 10_000:
        return f"{us // 1000}ms"
    if us >= 10:
        return f"{us}μs"
    if us >= 0:
        return f"{us * 1000}ns"
    return "-"


def _client(entry: AccessEntry) -> str:
    address = entry.client_address
    if not address:
        return "-"
    if ":" in address:  # IPv6, written as a socket address is: [addr]:port
        return f"[{address}]:{entry.client_port}"
    return f"{address}:{entry.client_port}"


def _tags(entry: AccessEntry) -> str:
    """The frontend's tags ``k=v, …`` (sorted by key), then ``user-agent=…`` with spaces
    written ``_`` and brackets ``{}`` (so the bracketed field stays one word)."""
    tags = entry.tags
    text = ", ".join(f"{k}={v}" for k, v in sorted(tags.items())) if tags else ""
    agent = entry.user_agent
    if not agent:
        return text
    agent = agent.replace(" ", "_").replace("[", "{").replace("]", "}")
    return f"{text}, user-agent={agent}" if text else f"user-agent={agent}"


def _protocol(entry: AccessEntry) -> str:
    """``HTTP``, ``TCP`` …; with the TLS version when known: ``HTTPS-TLS1.3``."""
    protocol = entry.protocol or "-"
    version = entry.tls_version
    if version and "-" not in protocol:
        return f"{protocol}-{version.replace('v', '')}"
    return protocol


def ascii_message(entry: AccessEntry) -> str:
    """The message of sōzu's ascii access line (reference §I.3)::

        [<session> <request> <cluster> <backend>] <client> <backend address>
        <request time>/<service time>/<response time>/<client rtt>/<server rtt>
        <bytes in> <bytes out> [<tags, user-agent>] None <protocol>
        <authority> <method> <path> <status>[ | <message>]

    on one line; ``-`` for what is unknown (the round-trip times always). A TCP session has
    no HTTP endpoint: one ``-`` stands for authority, method, path and status."""
    if entry.protocol.startswith("TCP"):
        endpoint = "-"
    else:
        endpoint = (
            f"{entry.authority or '-'} {entry.method or '-'} {entry.path or '-'} "
            f"{entry.status or '-'}"
        )
    line = (
        f"[{entry.session_id or '-'} {entry.request_id or '-'} {entry.cluster_id or '-'} "
        f"{entry.backend_id or '-'}] {_client(entry)} {entry.backend_address or '-'} "
        f"{format_duration(entry.request_time_us)}/{format_duration(entry.service_time_us)}/"
        f"{format_duration(entry.response_time_us)}/-/- {entry.bytes_in} {entry.bytes_out} "
        f"[{_tags(entry)}] None {_protocol(entry)} {endpoint}"
    )
    if entry.message:
        return f"{line} | {entry.message}"
    return line


def field_value(head: bytes, name: bytes) -> str:
    """The value of the first header field ``name`` (lowercase) of a raw request ``head``,
    "" when it has none."""
    start = head.lower().find(b"\r\n" + name + b":")
    if start < 0:
        return ""
    start += len(name) + 3
    end = head.find(b"\r\n", start)
    return head[start:end].strip().decode("latin-1")


def exchange_entry(
    exchange: Exchange,
    sample: Sample,
    message: str,
    session_id: str,
    peer: tuple[str, int],
    tls: tuple[str, str, str] | None,
) -> AccessEntry:
    """The entry of an HTTP exchange that ended: what it carried (its head, or the fast
    path's facts without parsing the head again), its figures (``sample``, see
    :data:`.metrics.Sample`), the connection's id, client address and TLS facts (version,
    cipher, name asked for; None on plain HTTP); ``message``: why the proxy answered itself."""
    _, total, service, response = sample[:4]
    entry = AccessEntry()
    entry.time_ns = time.time_ns()
    entry.session_id = session_id
    entry.request_id = exchange.request_id.decode()
    cluster = exchange.cluster
    entry.cluster_id = cluster.cluster_id if cluster is not None else ""
    backend = exchange.backend
    if backend is not None:
        entry.backend_id = backend.backend_id
        entry.backend_address = backend.address
    entry.client_address, entry.client_port = peer
    entry.protocol = "HTTP" if tls is None else "HTTPS"
    head = exchange.head
    if head is not None:
        entry.method = head.method.decode("latin-1")
        entry.authority = head.host.decode("latin-1")
        entry.path = head.target.decode("latin-1")
        entry.user_agent = next(
            (v for n, v in head.headers if n.lower() == b"user-agent"), b""
        ).decode("latin-1")
    elif exchange.fast_raw:
        entry.method = exchange.method.decode("latin-1")
        entry.authority = exchange.fast_host.decode("latin-1")
        entry.path = exchange.fast_target.decode("latin-1")
        entry.user_agent = field_value(exchange.fast_raw, b"user-agent")
    entry.status = exchange.status
    entry.message = message
    entry.request_time_us = total // 1000
    entry.service_time_us = max(service, 0) // 1000
    entry.response_time_us = response // 1000 if response > 0 else -1
    entry.bytes_in = exchange.bytes_in
    entry.bytes_out = exchange.bytes_out
    if tls is not None:
        entry.tls_version, entry.tls_cipher, entry.tls_sni = tls
    route = exchange.route
    if route is not None and route.tags:
        entry.tags = dict(route.tags)
    return entry


def is_error(entry: AccessEntry) -> bool:
    """A 5xx answer the proxy gave itself (it says why, or no backend answered)."""
    return entry.status >= 500 and (bool(entry.message) or entry.response_time_us < 0)


def format_ascii(entry: AccessEntry, tag: str, pid: int | None = None) -> str:
    """The whole ascii line (no newline): sōzu's prefix, ``<RFC 3339 µs> <unix ns> <pid>
    INFO-ACCESS  <tag>\\t`` (``ERROR-ACCESS`` for :func:`is_error` entries; the level is padded
    to 12 characters), then :func:`ascii_message`."""
    level = "ERROR-ACCESS" if is_error(entry) else "INFO-ACCESS "
    process = os.getpid() if pid is None else pid
    return (
        f"{rfc3339(entry.time_ns)} {entry.time_ns} {process} {level} {tag}\t{ascii_message(entry)}"
    )


_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def _text(value: str) -> str:
    """A JSON string (ASCII only, every control character escaped), or null when empty."""
    return _quote(value) if value else "null"


def format_json(entry: AccessEntry, tag: str) -> str:
    """One JSON object (one line, ASCII only), every field present; unknown values null.
    ``time`` is RFC 3339 UTC with microseconds, durations are integers in microseconds,
    ``tags`` an object, ``worker`` the writer's tag (``WRK-00``).

    Written field by field around the C string encoder of :mod:`json`: the same text as
    ``json.dumps`` of the fields, in less than half the time (this runs per request; the
    quoting is inlined, a call per field costs)."""
    q = _quote
    response = entry.response_time_us
    session_id, request_id = entry.session_id, entry.request_id
    cluster_id, backend_id = entry.cluster_id, entry.backend_id
    backend_address, client_address = entry.backend_address, entry.client_address
    protocol, method, authority, path = entry.protocol, entry.method, entry.authority, entry.path
    user_agent, message = entry.user_agent, entry.message
    tls_version, tls_cipher, tls_sni = entry.tls_version, entry.tls_cipher, entry.tls_sni
    return (
        f'{{"time":{q(rfc3339(entry.time_ns)) if entry.time_ns else "null"},'
        f'"session_id":{q(session_id) if session_id else "null"},'
        f'"request_id":{q(request_id) if request_id else "null"},'
        f'"cluster_id":{q(cluster_id) if cluster_id else "null"},'
        f'"backend_id":{q(backend_id) if backend_id else "null"},'
        f'"backend_address":{q(backend_address) if backend_address else "null"},'
        f'"client_address":{q(client_address) if client_address else "null"},'
        f'"client_port":{entry.client_port or "null"},'
        f'"protocol":{q(protocol) if protocol else "null"},'
        f'"method":{q(method) if method else "null"},'
        f'"authority":{q(authority) if authority else "null"},'
        f'"path":{q(path) if path else "null"},"status":{entry.status or "null"},'
        f'"request_time_us":{entry.request_time_us},'
        f'"service_time_us":{entry.service_time_us},'
        f'"response_time_us":{response if response >= 0 else "null"},'
        f'"bytes_in":{entry.bytes_in},"bytes_out":{entry.bytes_out},'
        f'"user_agent":{q(user_agent) if user_agent else "null"},'
        f'"tls_version":{q(tls_version) if tls_version else "null"},'
        f'"tls_cipher":{q(tls_cipher) if tls_cipher else "null"},'
        f'"tls_sni":{q(tls_sni) if tls_sni else "null"},'
        f'"tags":{_ENCODE(entry.tags) if entry.tags else "{}"},'
        f'"message":{q(message) if message else "null"},"worker":{q(tag) if tag else "null"}}}'
    )


# ---------------------------------------------------------------------------------- writing


def _encode(lines: list[str]) -> bytes:
    """The lines as bytes, each ending with a newline (``lines`` is the caller's to drop)."""
    lines.append("")  # the last line's newline
    return "\n".join(lines).encode("utf-8", "replace")


class _FileSink:
    """A ``file://`` target (or standard output): lines appended with ``os.write`` on an
    ``O_APPEND`` descriptor, so that several writers of one file never overwrite each other.

    Every sink counts ``writes`` (system calls) and ``written`` (lines that went out whole);
    its ``deliver``, ``retry`` and ``close`` return how many lines were lost."""

    pending = 0  # bytes held back: none, a file takes everything

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.fd = self._open() if path is not None else 1
        self.writes = 0
        self.written = 0

    def _open(self) -> int:
        assert self.path is not None
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self.path, flags, 0o644)

    def deliver(self, lines: list[str]) -> int:
        """Write ``lines``; returns how many were lost (all of them on a failed write)."""
        count = len(lines)
        view = memoryview(_encode(lines))
        while view:
            self.writes += 1
            try:
                written = os.write(self.fd, view)
            except OSError:  # disk full, file system gone: the lines are lost
                return count
            if written <= 0:
                return count
            view = view[written:]
        self.written += count
        return 0

    def retry(self) -> int:
        return 0

    def reopen(self) -> None:
        if self.path is not None:
            old, self.fd = self.fd, self._open()
            os.close(old)

    def close(self) -> int:
        if self.path is not None:
            os.close(self.fd)
        return 0


class _DatagramSink:
    """A ``udp://`` or ``unix://`` target: one datagram per line; a line the socket does not
    take at once is lost."""

    pending = 0

    def __init__(self, sock: LineSocket) -> None:
        self.sock = sock
        self.writes = 0
        self.written = 0

    def deliver(self, lines: list[str]) -> int:
        lost = 0
        send = self.sock.send
        for line in lines:
            if send((line + "\n").encode("utf-8", "replace")) <= 0:
                lost += 1
        self.writes += len(lines)
        self.written += len(lines) - lost
        return lost

    def retry(self) -> int:
        return 0

    def reopen(self) -> None:
        return None

    def close(self) -> int:
        self.sock.close()
        return 0


class _StreamSink:
    """A ``tcp://`` target: one send per flush. What the socket does not take at once waits
    (``backlog``, counted in the writer's bound) and goes first at the next flush; when the
    connection fails, what waited is lost and the next flush connects again."""

    def __init__(self, sock: LineSocket) -> None:
        self.sock = sock
        self.writes = 0
        self.written = 0
        self.backlog = b""

    @property
    def pending(self) -> int:
        return len(self.backlog)

    def deliver(self, lines: list[str]) -> int:
        data = self.backlog + _encode(lines) if self.backlog else _encode(lines)
        return self._send(data)

    def retry(self) -> int:
        return self._send(self.backlog) if self.backlog else 0

    def _send(self, data: bytes) -> int:
        self.writes += 1
        sent = self.sock.send(data)
        if sent < 0:  # the connection failed: the lines not sent whole are lost
            self.backlog = b""
            return data.count(b"\n")
        if sent:
            self.written += data.count(b"\n", 0, sent)
            self.backlog = data[sent:]
        else:
            self.backlog = data
        return 0

    def reopen(self) -> None:
        return None

    def close(self) -> int:
        """Close the connection; returns how many lines were still waiting (lost)."""
        lost = self.backlog.count(b"\n")
        self.backlog = b""
        self.sock.close()
        return lost


_Sink = _FileSink | _DatagramSink | _StreamSink


def _sink(target: str) -> _Sink:
    if target.startswith("file://"):
        return _FileSink(target.removeprefix("file://"))
    sock = line_socket(target)
    if sock is None:
        return _FileSink(None)  # stdout
    return _DatagramSink(sock) if sock.datagram else _StreamSink(sock)


class AccessLogWriter:
    """Formats access-log entries and writes them without blocking the event loop.

    :meth:`write` formats the entry (``ascii`` or ``json``) and appends the line to a buffer;
    the buffer is written ``flush_delay`` after its first line (at once past ``flush_bytes``). Lines
    that would take what waits past ``max_buffered`` (characters buffered, and bytes a stream
    did not take yet) are dropped; ``dropped`` counts them, with the lines a target lost.
    ``written`` counts the lines that went out whole, ``writes`` the system calls that sent
    them. :meth:`reopen` opens the file again (log rotation); :meth:`close` writes what waits,
    then closes.
    """

    def __init__(
        self,
        target: str,
        log_format: str = "ascii",
        tag: str = "",
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        flush_bytes: int = FLUSH_BYTES,
        max_buffered: int = MAX_BUFFERED,
        flush_delay: float = FLUSH_DELAY,
    ) -> None:
        self.target = target
        self.format = log_format
        self.tag = tag
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.flush_bytes = flush_bytes
        self.flush_delay = flush_delay
        self.max_buffered = max_buffered
        self.render: Callable[[AccessEntry], str]
        if log_format == "json":
            self.render = functools.partial(format_json, tag=tag)
        else:
            self.render = functools.partial(format_ascii, tag=tag, pid=os.getpid())
        self.sink = _sink(target)
        self.lines: list[str] = []
        self.entries: list[AccessEntry] = []  # not formatted yet
        self.size = 0  # characters in ``lines``, newlines included
        self.scheduled = False
        self.retrying: asyncio.TimerHandle | None = None
        self.closed = False
        self.dropped = 0

    @property
    def writes(self) -> int:
        return self.sink.writes

    @property
    def written(self) -> int:
        return self.sink.written

    def write(self, entry: AccessEntry) -> None:
        """Buffer ``entry``; it is formatted with the others of its batch, then written,
        within ``flush_delay``. (Formatting a batch in one loop is several times faster than
        one entry at a time between requests: the code and data stay in the processor's
        caches.)"""
        if not entry.time_ns:
            entry.time_ns = time.time_ns()
        size = self.size + ENTRY_SIZE
        if self.closed or size + self.sink.pending > self.max_buffered:
            self.dropped += 1
            return
        self.entries.append(entry)
        self.size = size
        self._written_soon(size)

    def write_line(self, line: str) -> None:
        """Buffer a line already formatted (without its newline), after the entries before
        it."""
        size = self.size + len(line) + 1
        if self.closed or size + self.sink.pending > self.max_buffered:
            self.dropped += 1
            return
        self._format_entries()
        self.lines.append(line)
        self.size = size
        self._written_soon(size)

    def _written_soon(self, size: int) -> None:
        if size >= self.flush_bytes:
            self.flush()
        elif not self.scheduled:
            self.scheduled = True
            self.loop.call_later(self.flush_delay, self.flush)

    def _format_entries(self) -> None:
        entries = self.entries
        if entries:
            self.entries = []
            render = self.render
            self.lines.extend([render(entry) for entry in entries])

    def flush(self) -> None:
        """Format the buffered entries and write every buffered line now (one write for a file
        or a stream)."""
        self.scheduled = False
        self._format_entries()
        lines = self.lines
        if lines:
            self.lines, self.size = [], 0
            self.dropped += self.sink.deliver(lines)
        elif self.sink.pending:
            self.dropped += self.sink.retry()
        self._retry_later()

    def _retry_later(self) -> None:
        """A stream that did not take everything is tried again soon, lines or not."""
        if self.sink.pending and self.retrying is None and not self.closed:
            self.retrying = self.loop.call_later(RETRY_DELAY, self._retry)

    def _retry(self) -> None:
        self.retrying = None
        if not self.scheduled:
            self.flush()

    def reopen(self) -> None:
        """Open the file again (after a rotation renamed it): the lines buffered so far go to
        the old file, the next ones to the new."""
        self.flush()
        self.sink.reopen()

    def close(self) -> None:
        """Write what waits (a stream gets one last try), then close the target."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self.retrying is not None:
            self.retrying.cancel()
            self.retrying = None
        if self.sink.pending:
            self.dropped += self.sink.retry()
        self.dropped += self.sink.close()

"""One active check of one backend: an HTTP ``GET`` that must get the expected status, or a
TCP connection that must open, both within the check's timeout.

The HTTP probe opens a new connection, sends ``GET <uri> HTTP/1.1`` with ``Host``,
``User-Agent: sozu-health-check`` and ``Connection: close``, reads the status line and
closes: the body is never read. A backend that expects a PROXY protocol header (a cluster
that sends one) first gets a version 2 ``LOCAL`` header, the health-check form of the
protocol, so that it does not count the probe as a broken client.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
from typing import Final

from sozu_config.models import HealthCheck
from sozu_config.responses import ProbeResult

from ..worker.pool import connect_error
from ..worker.proxy_protocol import build_v2

__all__ = ["USER_AGENT", "probe"]

USER_AGENT: Final = "sozu-health-check"
MAX_STATUS_LINE: Final = 1024  # bytes of a status line read at most
# A PROXY protocol v2 LOCAL header: "the connection was opened by the proxy itself".
PROXY_V2_LOCAL: Final = build_v2(None, None, command="local")

_STATUS_LINE: Final = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2})(?: [^\r\n]*)?\r\n")


async def probe(
    check: HealthCheck,
    host: str,
    port: int,
    *,
    host_header: str,
    proxy_header: bool = False,
) -> ProbeResult:
    """Check the backend at ``host:port`` once, as ``check`` says."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                if proxy_header:
                    writer.write(PROXY_V2_LOCAL)
                if check.uri is None:
                    detail, ok = "connected", True
                else:
                    status = await _http_status(reader, writer, check.uri, host_header)
                    detail, ok = str(status), _expected(status, check.expected_status)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        detail, ok = f"no answer within {check.timeout:g} s", False
    except OSError as error:
        detail, ok = connect_error(error), False
    except ValueError as error:
        detail, ok = str(error), False
    return ProbeResult(
        time=dt.datetime.now(dt.UTC), ok=ok, latency=time.monotonic() - started, detail=detail
    )


async def _http_status(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, uri: str, host_header: str
) -> int:
    writer.write(
        f"GET {uri} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n".encode("ascii")
    )
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            raise ValueError("the connection closed without an answer") from None
        line = error.partial
    except asyncio.LimitOverrunError:
        raise ValueError("the answer does not start with a status line") from None
    match = _STATUS_LINE.match(line[:MAX_STATUS_LINE])
    if match is None:
        raise ValueError("the answer does not start with an HTTP/1.x status line")
    return int(match.group(1))


def _expected(status: int, expected: int) -> bool:
    return 200 <= status < 300 if expected == 0 else status == expected

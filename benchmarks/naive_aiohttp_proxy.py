"""The reverse proxy a Python developer would write with aiohttp, as a benchmark baseline.

It is deliberately ordinary: an ``aiohttp.web`` application whose single catch-all handler
forwards the method, path (with query), headers and body of each request to one origin through
one shared ``aiohttp.ClientSession``, then streams the origin's answer back chunk by chunk.
Hop-by-hop headers (RFC 9110 §7.6.1) are dropped in both directions and ``X-Forwarded-For`` is
appended, as every reverse proxy in the benchmark does. It speaks plain HTTP only.

Run it as::

    python benchmarks/naive_aiohttp_proxy.py --listen 127.0.0.1:8080 --origin 127.0.0.1:8000
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

# RFC 9110 §7.6.1: meaningful for one connection only, so a proxy must not forward them.
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Size of the pieces the answer body is relayed in; bounds the memory held per request.
STREAM_CHUNK_BYTES = 64 * 1024

ORIGIN_KEY = web.AppKey("origin", str)
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)


def end_to_end_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Return ``headers`` without the hop-by-hop ones.

    Besides the fixed list, any header named in a ``Connection`` header is hop-by-hop too
    (RFC 9110 §7.6.1), so it is dropped as well. Repeated headers keep their last value, which
    is what a straightforward ``dict`` copy does and is harmless for this benchmark's traffic.
    """
    named_by_connection = {
        token.strip().lower()
        for value in headers.getall("Connection", [])
        for token in value.split(",")
    }
    dropped = HOP_BY_HOP_HEADERS | named_by_connection
    return {name: value for name, value in headers.items() if name.lower() not in dropped}


async def forward(request: web.Request) -> web.StreamResponse:
    """Send ``request`` to the origin and stream the origin's answer back to the client."""
    session = request.app[SESSION_KEY]
    headers = end_to_end_headers(request.headers)
    peer = request.remote or ""
    previous = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{previous}, {peer}" if previous else peer
    url = f"http://{request.app[ORIGIN_KEY]}{request.rel_url}"
    # Passing the body stream only when there is one keeps bodiless requests bodiless
    # instead of turning them into empty chunked uploads.
    body = request.content if request.body_exists else None
    try:
        async with session.request(
            request.method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            # The answer is relayed as-is, so it must not be decompressed on the way.
            auto_decompress=False,
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=end_to_end_headers(upstream.headers),
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(STREAM_CHUNK_BYTES):
                await response.write(chunk)
            await response.write_eof()
            return response
    except aiohttp.ClientError as error:
        return web.Response(status=502, text=f"bad gateway: {error}\n")


async def client_session(app: web.Application) -> AsyncIterator[None]:
    """Own the one ``ClientSession`` (and its keep-alive pool) for the application's life."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        app[SESSION_KEY] = session
        yield


def make_application(origin: str) -> web.Application:
    """Build the proxy application forwarding everything to ``origin`` (``host:port``)."""
    app = web.Application()
    app[ORIGIN_KEY] = origin
    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def host_and_port(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` for argparse, rejecting anything else."""
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main() -> None:
    """Parse the command line and serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=host_and_port, required=True, help="HOST:PORT to bind")
    parser.add_argument("--origin", type=host_and_port, required=True, help="HOST:PORT to reach")
    arguments = parser.parse_args()
    listen_host, listen_port = arguments.listen
    origin_host, origin_port = arguments.origin
    web.run_app(
        make_application(f"{origin_host}:{origin_port}"),
        host=listen_host,
        port=listen_port,
        access_log=None,  # every proxy in the benchmark runs without access logs
        print=None,
    )


if __name__ == "__main__":
    main()

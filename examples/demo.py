"""Run the proxy on examples/demo.toml with two small demo backends, until Ctrl-C.

python examples/demo.py            (or: nox -s demo)

The proxy listens on 127.0.0.1:8080, the backends on 127.0.0.1:9001 and 127.0.0.1:9002.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
BACKENDS = {"A": 9001, "B": 9002}


def make_handler(name: str) -> type[BaseHTTPRequestHandler]:
    """A backend answering every request with a JSON description of it (its body included,
    read to the end so that a kept-alive connection stays in step with the proxy)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length > 0 else b""

        def _answer(self, *, with_body: bool = True) -> None:
            received = self._read_body()
            body = (
                json.dumps(
                    {
                        "backend": name,
                        "method": self.command,
                        "path": self.path,
                        "body_bytes": len(received),
                        "x-forwarded-for": self.headers.get("X-Forwarded-For"),
                        "x-request-id": self.headers.get("X-Request-Id"),
                    },
                    indent=2,
                ).encode()
                + b"\n"
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer()

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _as_typed(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def sozu_executable() -> str:
    """The ``sozu`` command of the interpreter running the demo, as it can be typed here."""
    beside = Path(sys.executable).parent / "sozu"
    if beside.is_file() and os.access(beside, os.X_OK):
        typed = _as_typed(Path(os.path.abspath(beside)))
        return typed if "/" in typed else f"./{typed}"
    return shutil.which("sozu") or "sozu"


def banner() -> str:
    sozu = f"{sozu_executable()} -c {_as_typed(HERE / 'demo.toml')}"
    return (
        "\nsozu demo: proxy on http://127.0.0.1:8080, backends A (:9001) and B (:9002). Try:\n\n"
        "  curl -H 'Host: demo.localhost' http://127.0.0.1:8080/          # alternates A and B\n"
        "  curl -H 'Host: demo.localhost' http://127.0.0.1:8080/api/users # cluster 'api'\n"
        "  curl -H 'Host: demo.localhost' -d hello=world http://127.0.0.1:8080/  # a POST\n"
        "  curl -i -H 'Host: nowhere' http://127.0.0.1:8080/              # 404 from the proxy\n"
        f"  {sozu} status          # the command socket\n"
        f"  {sozu} backend list    # up or down, last check\n\n"
        "Ctrl-C stops it.\n"
    )


def main() -> int:
    from sozu_config import ConfigError, load_config
    from sozu_runtime.main import run

    for name, port in BACKENDS.items():
        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(name))
        except OSError as error:
            print(f"error: demo backend {name} cannot listen on 127.0.0.1:{port}: {error.strerror}")
            return 1
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = load_config(HERE / "demo.toml")
    except ConfigError as error:
        print(f"error: {error}")
        return 1
    print(banner(), flush=True)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())

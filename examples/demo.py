"""Run the proxy on examples/demo.toml with two small demo backends, until Ctrl-C.

python examples/demo.py            (or: nox -s demo)
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
BACKENDS = {"A": 9001, "B": 9002}


def make_handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = (
                json.dumps(
                    {
                        "backend": name,
                        "path": self.path,
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
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


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
    print(
        "\nsozu demo: proxy on http://127.0.0.1:8080, backends A (:9001) and B (:9002). Try:\n\n"
        "  curl -H 'Host: demo.localhost' http://127.0.0.1:8080/          # alternates A and B\n"
        "  curl -H 'Host: demo.localhost' http://127.0.0.1:8080/api/users # cluster 'api'\n"
        "  curl -i -H 'Host: nowhere' http://127.0.0.1:8080/              # 404 from the proxy\n"
        f"  sozu -c {HERE / 'demo.toml'} status                 # the command socket\n"
        f"  sozu -c {HERE / 'demo.toml'} backend list           # up or down, last check\n\n"
        "Ctrl-C stops it.\n",
        flush=True,
    )
    return run(config)


if __name__ == "__main__":
    sys.exit(main())

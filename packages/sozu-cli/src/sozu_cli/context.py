"""What a command run knows: its arguments, its output, where the daemon is, how long to wait.

The command socket is ``--socket PATH`` when given (the configuration file is then only read
when ``-c`` names one explicitly), else the ``command_socket`` of the configuration file
(``-c FILE``, else ``$SOZU_CONFIG``). The wait for an answer is ``-t MS`` when given, else the
file's ``ctl_command_timeout`` (sōzu's 1000 ms without a file); requests that change something
or restart processes wait at least the library's ``MUTATION_TIMEOUT`` (30 s) unless ``-t`` was
given (0: no limit).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sozu_config import (
    ClientError,
    CommandClient,
    CommandTimeout,
    DaemonUnreachable,
    ProtocolError,
    Response,
    ResponseContent,
    SubscribeEvents,
)
from sozu_config.client import MUTATION_TIMEOUT
from sozu_config.requests import LIFECYCLE_TYPES, MUTATING_TYPES, type_names

from .errors import DaemonFailure, Unreachable, UsageError
from .output import Output

if TYPE_CHECKING:
    from sozu_config.config import Config

__all__ = ["DEFAULT_TIMEOUT_MS", "LONG_TIMEOUT_MS", "Context", "client_error", "content_of"]

DEFAULT_TIMEOUT_MS = 1_000
"""sōzu's ``ctl_command_timeout`` default, used when no configuration file is read."""
LONG_TIMEOUT_MS = int(MUTATION_TIMEOUT * 1000)
"""The least wait for requests that change the state or the processes (the library's
:data:`~sozu_config.client.MUTATION_TIMEOUT`): the daemon answers them once every worker has
applied them."""


_LONG_TYPES = (MUTATING_TYPES | LIFECYCLE_TYPES) - type_names(SubscribeEvents)
"""The requests that change the state or the processes: the state changes and the lifecycle
requests, but the event subscription (its connection waits for events without limit)."""

Render = Callable[[Any], None]


def client_error(error: ClientError | ProtocolError, socket_path: Path | str) -> Exception:
    """The command error for a client error: unreachable (exit 3) or a failure (exit 1)."""
    if isinstance(error, DaemonUnreachable):
        return Unreachable(f"{error}; start it with 'sozu start', or check -c/--socket")
    if isinstance(error, CommandTimeout):
        return DaemonFailure(
            f"the daemon at {socket_path} did not answer in time ({error}); "
            "the request may still take effect: check, or wait longer with -t MS",
            kind="timeout",
        )
    return DaemonFailure(f"the daemon at {socket_path} answered something unreadable: {error}")


class Context:
    """One run of a command."""

    def __init__(self, args: argparse.Namespace, output: Output) -> None:
        self.args = args
        self.output = output

    # ------------------------------------------------------------------ configuration

    @property
    def config_path(self) -> Path | None:
        """``-c FILE``, else ``$SOZU_CONFIG`` (ignored when ``--socket`` is given)."""
        given = getattr(self.args, "config", None)
        if given:
            return Path(given)
        if getattr(self.args, "socket", None):
            return None
        env = os.environ.get("SOZU_CONFIG")
        return Path(env) if env else None

    @cached_property
    def config(self) -> Config:
        """The configuration file, loaded and validated (a bad file is a usage error)."""
        from sozu_config.config import ConfigError, load_config

        path = self.config_path
        if path is None:
            raise UsageError(
                "no configuration file: give -c FILE or set SOZU_CONFIG "
                "(or --socket PATH to talk to a daemon directly)"
            )
        try:
            return load_config(path)
        except ConfigError as error:
            raise UsageError(str(error)) from None

    @property
    def socket_path(self) -> Path:
        """The command socket to talk to."""
        given = getattr(self.args, "socket", None)
        if given:
            return Path(given)
        return self.config.command_socket

    def timeout(self, request_type: str = "") -> float | None:
        """Seconds to wait for the answer to a request of that type (None: no limit)."""
        explicit: int | None = getattr(self.args, "timeout", None)
        if explicit is not None:
            return None if explicit == 0 else explicit / 1000
        if self.config_path is not None:
            milliseconds = self.config.ctl_command_timeout
        else:
            milliseconds = DEFAULT_TIMEOUT_MS
        if milliseconds == 0:
            return None
        if request_type in _LONG_TYPES:
            milliseconds = max(milliseconds, LONG_TIMEOUT_MS)
        return milliseconds / 1000

    # ------------------------------------------------------------------ talking to the daemon

    def connect(self, request_type: str = "") -> CommandClient:
        """A connected client that waits as long as answers to ``request_type`` may take."""
        path = self.socket_path
        client = CommandClient(path, timeout=self.timeout(request_type))
        try:
            client.connect()
        except CommandTimeout:
            raise Unreachable(
                f"connecting to the command socket {path} timed out: the daemon does not accept "
                "connections (is it overloaded or stopped?)"
            ) from None
        except ClientError as error:
            raise client_error(error, path) from None
        return client

    def send(
        self, request: Any, *, on_processing: Callable[[Response], None] | None = None
    ) -> Response:
        """Send one request on a new connection and return the final answer."""
        client = self.connect(request.type)
        try:
            return client.send(request, on_processing=on_processing)
        except (ClientError, ProtocolError) as error:
            raise client_error(error, self.socket_path) from None
        finally:
            client.close()

    def send_patiently(self, request: Any, within: float = LONG_TIMEOUT_MS / 1000) -> Response:
        """:meth:`send`, again on a new connection while the daemon cannot be reached (it
        may be re-executing its main process), for ``within`` seconds at most. For requests
        that can be sent twice (queries, upgrades of a named worker)."""
        deadline = time.monotonic() + within
        while True:
            try:
                return self.send(request)
            except Unreachable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    # ------------------------------------------------------------------ answers

    def finish(self, response: Response, render: Render | None = None) -> int:
        """Show a final answer and return the exit code.

        ``ok``: with ``--json`` its content (or ``{"status", "message"}`` when it has none),
        else ``render(content)`` or the message. ``failure``: with ``--json``
        ``{"status", "message"[, "kind", "index", "content"]}`` on stdout; the message on
        stderr; exit 1.
        """
        output = self.output
        if not response.ok:
            if output.json_mode:
                data: dict[str, Any] = {"status": "failure", "message": response.message}
                if response.kind is not None:
                    data["kind"] = response.kind.value
                if response.index is not None:
                    data["index"] = response.index
                if response.content is not None:
                    data["content"] = response.content.model_dump(mode="json")
                output.json(data)
            raise DaemonFailure(
                response.message or "the daemon refused the request",
                kind=response.kind.value if response.kind is not None else None,
            )
        if output.json_mode:
            if response.content is not None:
                output.json(response.content)
            else:
                output.json({"status": "ok", "message": response.message})
            return 0
        if render is not None:
            render(response.content)
        else:
            output.success(response.message or "done")
        return 0

    def run(self, request: Any, render: Render | None = None) -> int:
        """Send ``request`` and :meth:`finish` with its answer."""
        return self.finish(self.send(request), render)


def content_of(response: Response, kind: type[Any]) -> Any:
    """The answer's content when it is a ``kind`` (else a failure: the daemon answered oddly)."""
    content: ResponseContent | None = response.content
    if not isinstance(content, kind):
        raise DaemonFailure(
            f"the daemon answered without the expected {kind.__name__} content: "
            f"{response.message or 'no message'}"
        )
    return content

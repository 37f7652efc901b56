"""The audit trail of the main process: one record per command that changes the daemon.

sōzu's ``audit_logs_target`` (text lines) and ``audit_logs_json_target`` (JSON lines): who
(the peer's uid, gid, pid and command name, from ``SO_PEERCRED``), what (the verb and its
target, as plans and events describe it), and how it went (the result, its message, and how
many workers applied it). Files are opened for appending and created with mode 0640. A record
never holds a private key: targets are request descriptions, which name certificates by their
address and names only.

Commands recorded: every mutating request (a batch is one record), and the verbs that act on
the daemon as a whole (load, save and reload of state, upgrades, stops, log level, metrics).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sozu_config import requests as rq
from sozu_config.responses import Response

from .command_socket import Peer

log = logging.getLogger("sozu.main")

__all__ = ["AUDITED_TYPES", "AuditLog", "FanOut", "fan_out"]

# Verbs that act on the daemon as a whole, audited with the mutating requests.
AUDITED_TYPES = rq.MUTATING_TYPES | frozenset(
    {
        "load_state",
        "save_state",
        "reload_configuration",
        "upgrade_main",
        "upgrade_worker",
        "soft_stop",
        "hard_stop",
        "logging",
        "configure_metrics",
    }
)


@dataclass(slots=True)
class FanOut:
    """Workers a command was sent to, and how many of them applied it (summed over the
    fan-outs of one command: a state load makes one per record)."""

    sent: int = 0
    applied: int = 0


fan_out: contextvars.ContextVar[FanOut | None] = contextvars.ContextVar("fan_out", default=None)
"""The fan-out tally of the command being served (each command connection is its own task,
so concurrent commands never mix their counts)."""


@dataclass
class AuditLog:
    """The open audit sinks (none, one or both)."""

    text: TextIO | None = None
    json_lines: TextIO | None = None
    paths: list[Path] = field(default_factory=list)

    @classmethod
    def open(cls, text_path: Path | None, json_path: Path | None) -> AuditLog:
        """Open the configured files; raises OSError naming the file that cannot be opened."""
        audit = cls()
        if text_path is not None:
            audit.text = _open_append(text_path)
            audit.paths.append(text_path)
        if json_path is not None:
            audit.json_lines = _open_append(json_path)
            audit.paths.append(json_path)
        return audit

    @property
    def enabled(self) -> bool:
        return self.text is not None or self.json_lines is not None

    def record(
        self, peer: Peer | None, request: rq.Request, response: Response, tally: FanOut | None
    ) -> None:
        if not self.enabled or request.type not in AUDITED_TYPES:
            return
        now = dt.datetime.now(dt.UTC)
        verb = request.type
        target = request.describe().removeprefix(verb).strip()
        entry: dict[str, Any] = {
            "time": now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "uid": peer.uid if peer is not None else None,
            "gid": peer.gid if peer is not None else None,
            "pid": peer.pid if peer is not None else None,
            "comm": peer.command if peer is not None else None,
            "verb": verb,
            "target": target,
            "result": response.status.value,
            "message": response.message,
            "workers_sent": tally.sent if tally is not None else 0,
            "workers_applied": tally.applied if tally is not None else 0,
        }
        if self.text is not None:
            self._write(self.text, _text_line(entry))
        if self.json_lines is not None:
            self._write(self.json_lines, json.dumps(entry, ensure_ascii=False) + "\n")

    def _write(self, sink: TextIO, line: str) -> None:
        try:
            sink.write(line)
            sink.flush()
        except OSError as error:
            log.error("cannot write the audit log: %s", error)

    def reopen(self) -> None:
        """Open the files again (after a rotation renamed them); raises OSError."""
        text, json_lines = self.text, self.json_lines
        paths = iter(self.paths)
        if text is not None:
            text.close()
            self.text = _open_append(next(paths))
        if json_lines is not None:
            json_lines.close()
            self.json_lines = _open_append(next(paths))

    def close(self) -> None:
        for sink in (self.text, self.json_lines):
            if sink is not None:
                with contextlib.suppress(OSError):
                    sink.close()
        self.text = self.json_lines = None


def _open_append(path: Path) -> TextIO:
    """Open ``path`` for appending; a new file gets mode 0640 whatever the umask (an existing
    one keeps the mode its owner gave it)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o640)
        os.fchmod(fd, 0o640)
    except FileExistsError:
        fd = os.open(path, flags)
    return os.fdopen(fd, "a", encoding="utf-8")


def _quote(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    if any(c in text for c in ' "\\\n\r\t='):
        return json.dumps(text, ensure_ascii=False)
    return text


def _text_line(entry: dict[str, Any]) -> str:
    fields = (
        f"uid={_quote(entry['uid'])} gid={_quote(entry['gid'])} pid={_quote(entry['pid'])} "
        f"comm={_quote(entry['comm'])} verb={entry['verb']} target={_quote(entry['target'])} "
        f"result={entry['result']} workers={entry['workers_applied']}/{entry['workers_sent']} "
        f"message={_quote(entry['message'])}"
    )
    return f"{entry['time']} {fields}\n"

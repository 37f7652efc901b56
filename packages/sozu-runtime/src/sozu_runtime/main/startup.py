"""What the daemon claims when it starts, before it serves: the command socket's path, the
audit logs, the pid file. A failure here stops the start with :class:`StartupError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket

from sozu_config.config import Config

from .audit import AuditLog
from .command_socket import CommandServer

log = logging.getLogger("sozu.main")

__all__ = [
    "StartupError",
    "claim_command_socket",
    "open_audit_logs",
    "serve_commands",
    "write_pid_file",
]


class StartupError(Exception):
    """The daemon cannot start; the message is for the user (one paragraph)."""


def claim_command_socket(config: Config) -> None:
    """Make sure the command socket's path is free (removing a stale socket nobody listens
    on) and its folder exists."""
    path = config.command_socket
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: nobody listens
        else:
            raise StartupError(
                f"another sozu daemon is running on the command socket {path}: stop it first "
                "(sozu shutdown), or use another command_socket"
            )
        finally:
            probe.close()
    if not path.parent.is_dir():
        raise StartupError(
            f"{config.path}: command_socket {path}: the folder {path.parent} does not exist"
        )


async def serve_commands(commands: CommandServer, config: Config) -> None:
    """Create the command socket and serve it."""
    path = os.fspath(config.command_socket)
    try:
        await commands.listen(path)
    except OSError as error:
        raise StartupError(f"cannot create the command socket {path}: {error.strerror}") from None


def open_audit_logs(config: Config) -> AuditLog:
    try:
        return AuditLog.open(config.audit_logs_target, config.audit_logs_json_target)
    except OSError as error:
        raise StartupError(
            f"{config.path}: cannot open the audit log {error.filename}: {error.strerror}"
        ) from None


def write_pid_file(config: Config) -> None:
    """Write the pid file, when one is configured (a failure is logged, not fatal)."""
    path = config.pid_file_path
    if path is None:
        return
    try:
        path.write_text(f"{os.getpid()}\n")
    except OSError as error:
        log.error("cannot write the pid file %s: %s", path, error.strerror)

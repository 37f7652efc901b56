"""systemd's readiness protocol (``sd_notify``), for ``Type=notify`` services.

When systemd starts the daemon, it sets ``NOTIFY_SOCKET`` to a datagram socket (a path, or
``@name`` in the abstract namespace) and waits for ``READY=1``. The main process says
``READY=1`` once it serves, ``RELOADING=1`` then ``READY=1`` around a reload or an upgrade,
``STOPPING=1`` when it stops, and ``STATUS=…`` lines that ``systemctl status`` shows. Without
``NOTIFY_SOCKET`` nothing is sent. Workers never notify (systemd would ignore them anyway with
``NotifyAccess=main``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

__all__ = ["notify", "reloading"]

log = logging.getLogger("sozu.main")


def notify(message: str) -> bool:
    """Send ``message`` (``KEY=value`` lines) to the service manager; False when there is
    none, or it cannot be reached (logged, never raised: the proxy does not depend on it)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as error:
        log.warning("cannot notify the service manager at %s: %s", address.lstrip("\0"), error)
        return False
    return True


def reloading(status: str) -> bool:
    """``RELOADING=1`` with the monotonic time systemd ≥ 253 asks for, and a status line."""
    with contextlib.suppress(Exception):
        microseconds = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return notify(f"RELOADING=1\nMONOTONIC_USEC={microseconds}\nSTATUS={status}")
    return False

"""Reading the files a configuration or a command names: regular files only, of bounded size.

A path in a configuration file or a command may name anything: a FIFO (whose reader waits for
a writer that never comes), a device (``/dev/zero`` never ends), a directory, or a huge file.
Every file this package reads goes through :func:`open_regular` (which refuses all but regular
files before a byte is read, and never blocks on opening) or :func:`read_regular` (which also
refuses files over a size limit).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

__all__ = ["NotRegularFile", "TooLarge", "open_regular", "read_regular", "read_regular_text"]


class NotRegularFile(OSError):
    """The path exists but is not a regular file (a FIFO, a device, a directory…)."""


class TooLarge(OSError):
    """The file is larger than the limit of what it is read for."""


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for reading, refusing anything but a regular file (``strerror`` says
    why). ``O_NONBLOCK`` keeps the opening of a FIFO from waiting for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except ValueError:  # a NUL byte in the name: no file can have it
        raise OSError(errno.EINVAL, "invalid file name", os.fspath(path)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(0, "not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The content of the regular file ``path``, refused when it has more than ``limit``
    bytes (checked while reading: a file that grows is caught too)."""
    with open_regular(path) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(0, f"larger than {limit} bytes", os.fspath(path))
    return data


def read_regular_text(path: str | os.PathLike[str], limit: int) -> str:
    """:func:`read_regular` as UTF-8 text with universal newlines (as ``Path.read_text``);
    raises UnicodeDecodeError when it is not UTF-8."""
    text = read_regular(path, limit).decode("utf-8")
    return text.replace("\r\n", "\n").replace("\r", "\n")

"""A fleet's configuration in etcd, and reading it into the object a file gives.

Layout under ``PREFIX`` (the path of ``etcd://HOST:PORT/PREFIX``), readable and editable with
``etcdctl``:

* ``PREFIX/config.toml``: the TOML document, as text;
* ``PREFIX/files/<path>``: every file the document names (certificates, keys, chains, answer
  templates), ``<path>`` as written in the document (relative to the document);
* ``PREFIX/status/<node>``: what each watcher's proxy runs (JSON, under a lease).

The configuration's revision is the highest ``mod_revision`` of ``config.toml`` and of the
files: a publish writes them all in one transaction, at one revision.

To be checked, a snapshot is written to a private temporary folder (the document and its files
side by side) and read by the same loader as a file, so that it gets the same checks; the
messages name the keys in etcd, not the temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from sozu_config.config import Config, checked_config

from ..watch import raw_paths
from .etcd import EtcdClient, prefix_end

__all__ = [
    "CONFIG_KEY",
    "EtcdTls",
    "FleetError",
    "FleetSource",
    "Loaded",
    "Snapshot",
    "check_relative",
    "load_fleet",
    "load_snapshot",
    "read_snapshot",
]

CONFIG_KEY = "config.toml"
FILES = "files/"
STATUS = "status/"
SCHEME = "etcd://"
TLS_SCHEME = "etcds://"
DEFAULT_PORT = 2379
EXAMPLE = "etcd://127.0.0.1:2379/sozu/prod"
_PREFIX = re.compile(r"^[A-Za-z0-9._~@+=,-]+(/[A-Za-z0-9._~@+=,-]+)*$")


class FleetError(Exception):
    """A fleet source that cannot be used (bad URL, nothing published, a document that does
    not check): ``message`` says why, one paragraph."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _member(url: str, part: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[V6]:PORT`` for IPv6) of one member named in ``url``."""
    parts = urlsplit(f"//{part}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise FleetError(f"{url!r}: the port of {part!r} is not a number in 1-65535") from None
    if not parts.hostname or parts.username or parts.password:
        raise FleetError(f"{url!r}: {part!r} is not HOST:PORT; write it as {EXAMPLE}")
    return parts.hostname, port


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """The files of a TLS connection to etcd (``etcds://``): the CA that signed etcd's
    certificate (default: the system's), and this client's certificate and key when etcd asks
    for one (``--client-cert-auth``)."""

    ca: Path | None = None
    certificate: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        """The context to connect with, or :class:`FleetError` naming the file that is not
        usable."""
        try:
            context = ssl.create_default_context(cafile=None if self.ca is None else str(self.ca))
        except (OSError, ssl.SSLError) as error:
            raise FleetError(f"the CA file {self.ca} is not usable: {_reason(error)}") from None
        if self.certificate is not None:
            try:
                context.load_cert_chain(
                    str(self.certificate), None if self.key is None else str(self.key)
                )
            except (OSError, ssl.SSLError) as error:
                raise FleetError(
                    f"the client certificate {self.certificate} (key "
                    f"{self.key or 'in the same file'}) is not usable: {_reason(error)}"
                ) from None
        return context


def _reason(error: OSError | ssl.SSLError) -> str:
    return str(getattr(error, "reason", None) or error.strerror or error)


@dataclass(frozen=True, slots=True)
class FleetSource:
    """``etcd://HOST:PORT[,HOST:PORT…]/PREFIX`` (``etcds://`` over TLS): where a fleet's
    configuration lives (the members of one etcd cluster, tried in turn, and the key prefix)."""

    members: tuple[tuple[str, int], ...]
    prefix: str
    """The key prefix, with a leading ``/`` and no trailing one: ``/sozu/prod``."""
    tls: EtcdTls | None = None
    """How to connect over TLS; None: plain HTTP (``etcd://``)."""

    @classmethod
    def parse(cls, url: str, tls: EtcdTls | None = None) -> FleetSource:
        """Read a source URL, or raise :class:`FleetError` saying what is wrong with it.
        ``tls``: the files of an ``etcds://`` source (refused with ``etcd://``)."""
        scheme = next((s for s in (SCHEME, TLS_SCHEME) if url.startswith(s)), None)
        if scheme is None:
            raise FleetError(
                f"{url!r} is not an etcd source: write it as {EXAMPLE} (etcds:// over TLS)"
            )
        if scheme == SCHEME and tls is not None:
            raise FleetError(f"{url!r}: TLS files are for an etcds:// source")
        location, _, path = url.removeprefix(scheme).partition("/")
        if "?" in path or "#" in path:
            raise FleetError(f"{url!r}: an etcd source has no '?' or '#' part")
        if not location:
            raise FleetError(f"{url!r} names no host: write it as {EXAMPLE}")
        members = tuple(_member(url, part) for part in location.split(","))
        prefix = path.strip("/")
        if not prefix or not _PREFIX.match(prefix) or ".." in prefix.split("/"):
            raise FleetError(
                f"{url!r} names no usable key prefix (letters, digits, '.', '-', '_', "
                f"separated by '/'): write it as {EXAMPLE}"
            )
        if scheme == TLS_SCHEME and tls is None:
            tls = EtcdTls()
        return cls(members, "/" + prefix, tls)

    @staticmethod
    def _address(host: str, port: int) -> str:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def endpoints(self) -> list[str]:
        """The members' client URLs."""
        scheme = "http" if self.tls is None else "https"
        return [f"{scheme}://{self._address(host, port)}" for host, port in self.members]

    @property
    def url(self) -> str:
        location = ",".join(self._address(host, port) for host, port in self.members)
        return f"{SCHEME if self.tls is None else TLS_SCHEME}{location}{self.prefix}"

    @property
    def root(self) -> str:
        """Every key of the fleet starts with this."""
        return self.prefix + "/"

    @property
    def config_key(self) -> str:
        return self.root + CONFIG_KEY

    @property
    def files_prefix(self) -> str:
        return self.root + FILES

    @property
    def status_prefix(self) -> str:
        return self.root + STATUS

    def file_key(self, raw: str) -> str:
        return self.files_prefix + raw

    def status_key(self, node: str) -> str:
        return self.status_prefix + node

    @property
    def configuration_range(self) -> tuple[str, str]:
        """The keys a watcher watches: from the document to the last file (``config.toml`` <
        ``files/`` < ``status/``: the statuses the nodes write wake no watcher)."""
        return self.config_key, prefix_end(self.files_prefix)

    def concerns_configuration(self, key: str) -> bool:
        """Whether a change of ``key`` changes the configuration (not a node's status)."""
        return key == self.config_key or key.startswith(self.files_prefix)

    def client(self) -> EtcdClient:
        return EtcdClient(self.endpoints, tls=None if self.tls is None else self.tls.context())


@dataclass(frozen=True)
class Snapshot:
    """The configuration in etcd at one revision of the store."""

    source: FleetSource
    store_revision: int
    """The store's revision when it was read (a watch resumes after it)."""
    text: str | None
    """The document, or None when nothing is published."""
    files: dict[str, bytes] = field(default_factory=dict)
    """The named files, by path as written in the document."""
    revision: int = 0
    """The configuration's revision: the highest ``mod_revision`` of the document and files."""


async def read_snapshot(client: EtcdClient, source: FleetSource) -> Snapshot:
    """The document and its files, read at one revision of the store."""
    store_revision, documents = await client.range(source.config_key)
    _, files = await client.range(source.files_prefix, prefix=True, revision=store_revision)
    if not documents:
        return Snapshot(source, store_revision, None)
    document = documents[0]
    try:
        text = document.value.decode("utf-8")
    except UnicodeDecodeError:
        raise FleetError(f"{source.url}/{CONFIG_KEY} is not UTF-8 text") from None
    revision = max([document.mod_revision, *(kv.mod_revision for kv in files)])
    named = {kv.key.removeprefix(source.files_prefix): kv.value for kv in files}
    return Snapshot(source, store_revision, text, named, revision)


def check_relative(raw: str) -> str | None:
    """Why a file path named by a fleet's document cannot be stored under ``files/`` (None
    when it can): it must be relative and stay within the document's folder."""
    path = PurePosixPath(raw)
    if path.is_absolute():
        return (
            f"{raw!r} is an absolute path: a fleet's document names its files relative to "
            "itself (publish it from a folder holding them, e.g. certs/site.pem)"
        )
    if ".." in path.parts or not path.parts:
        return f"{raw!r} leaves the document's folder: name files below it (no '..')"
    return None


@dataclass(frozen=True)
class Loaded:
    """A snapshot read as a file would be: the configuration, or every error that refused it."""

    config: Config | None
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    socket_named: bool
    """Whether the document names its ``command_socket`` by an absolute path (usable as the
    default target; a relative one would point into the temporary folder)."""


def _named(text: str) -> list[str]:
    try:
        return list(dict.fromkeys(raw_paths(tomllib.loads(text))))
    except tomllib.TOMLDecodeError:
        return []  # the loader says where the syntax is wrong


def _socket_named(text: str) -> bool:
    try:
        value = tomllib.loads(text).get("command_socket")
    except tomllib.TOMLDecodeError:
        return False
    return isinstance(value, str) and os.path.isabs(value)


def load_snapshot(snapshot: Snapshot) -> Loaded:
    """Check a snapshot as ``sozu-apply`` checks a file: every error, or the configuration."""
    source = snapshot.source
    if snapshot.text is None:
        return Loaded(None, (f"nothing is published at {source.url}/{CONFIG_KEY}",), (), False)
    errors: list[str] = []
    for raw in _named(snapshot.text):
        why = check_relative(raw)
        if why is not None:
            errors.append(f"{source.url}/{CONFIG_KEY}: {why}")
        elif raw not in snapshot.files:
            errors.append(
                f"{source.url}/{CONFIG_KEY} names {raw!r}, and {source.file_key(raw)} is not in "
                "etcd (publish the document with the files it names)"
            )
    if errors:
        return Loaded(None, tuple(errors), (), False)
    with tempfile.TemporaryDirectory(prefix="sozu-fleet-") as folder:
        base = Path(os.path.realpath(folder))
        for raw, content in snapshot.files.items():
            if check_relative(raw) is not None:
                continue  # not named by the document (it would have been refused above)
            path = base / raw
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        document = base / CONFIG_KEY
        document.write_text(snapshot.text, encoding="utf-8")
        config, report = checked_config(document)

        def named(message: str) -> str:
            message = message.replace(str(document), f"{source.url}/{CONFIG_KEY}")
            return message.replace(f"{base}/", f"{source.url}/{FILES}")

        errors = [named(str(error)) for error in report.errors]
        warnings = tuple(named(str(warning)) for warning in report.warnings)
    if config is not None:  # not the temporary copy, gone by now: the key it was read from
        config = config.model_copy(update={"path": Path(source.config_key)})
    return Loaded(config, tuple(errors), warnings, _socket_named(snapshot.text))


async def _read(source: FleetSource) -> Snapshot:
    async with source.client() as client:
        return await read_snapshot(client, source)


def load_fleet(url: str, *, tls: EtcdTls | None = None) -> Config:
    """The desired configuration published at ``url`` (``etcd://HOST:PORT/PREFIX``), checked
    as :func:`sozu_config.config.load_checked` checks a file: the same object, to plan and
    apply with :mod:`sozu_config`. Raises :class:`FleetError` (every error in its message) or
    :class:`~sozu_cli.fleet.etcd.EtcdError` (etcd unreachable or refusing). ``tls``: the CA,
    certificate and key of an ``etcds://`` source."""
    source = FleetSource.parse(url, tls)
    loaded = load_snapshot(asyncio.run(_read(source)))
    if loaded.config is None:
        raise FleetError("\n".join(loaded.errors))
    return loaded.config

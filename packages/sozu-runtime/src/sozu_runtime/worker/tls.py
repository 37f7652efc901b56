"""TLS termination for HTTPS listeners: one ``SSLContext`` per certificate, chosen by SNI.

Each certificate added to a listener gets its own context, built once when the certificate is
added (never per connection). The listener's handshake context has an SNI callback that looks
the server name up — exact name first, then the ``*.`` wildcard of its parent domain — and
switches the connection to that certificate's context. When several certificates serve a
name, the one expiring last wins (its ``expired_at`` override first), so a rotation that adds
the new certificate before removing the old one never leaves the name uncovered. A client
that sends no SNI, or a name no certificate covers, gets the certificate of the listener's
``default_sni`` name, or a failed handshake when there is none (OpenSSL queues an
``unrecognized_name`` alert, but the event loop's TLS layer closes the connection without
flushing it: the client sees the connection closed during the handshake).

Protocol versions, the TLS 1.2 cipher suites, ALPN (``http/1.1``) and session tickets come
from the listener and apply to every certificate's context. Python's ``ssl`` cannot restrict
TLS 1.3 suites: TLS 1.3 uses OpenSSL's (all three standard AEAD suites).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from typing import TYPE_CHECKING, Any

from sozu_config.certificates import CertificateSummary
from sozu_config.grammar import fold_hostname, wildcard_parent
from sozu_config.models import HttpsListenerConfig, TlsVersion
from sozu_config.tls import CIPHER_SUITES, TLS13_SUITES

if TYPE_CHECKING:
    from sozu_config.state import ConfigState

__all__ = ["TlsRuntime", "build_context", "check_listener_tls"]

_VERSIONS = {
    TlsVersion.TLS_V10: ssl.TLSVersion.TLSv1,
    TlsVersion.TLS_V11: ssl.TLSVersion.TLSv1_1,
    TlsVersion.TLS_V12: ssl.TLSVersion.TLSv1_2,
    TlsVersion.TLS_V13: ssl.TLSVersion.TLSv1_3,
}


def _base_context(config: HttpsListenerConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(_VERSIONS[v] for v in config.tls_versions)
    if versions[0] < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL refuses TLS < 1.2 otherwise
    context.minimum_version = versions[0]
    context.maximum_version = versions[-1]
    tls12 = [CIPHER_SUITES[name] for name in config.cipher_list if name not in TLS13_SUITES]
    if tls12:
        context.set_ciphers(
            ":".join(tls12) + (":@SECLEVEL=0" if versions[0] < ssl.TLSVersion.TLSv1_2 else "")
        )
    elif versions[0] < ssl.TLSVersion.TLSv1_3:
        # only TLS 1.3 suites listed: older versions would have no cipher to offer
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(list(config.alpn_protocols))
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    with contextlib.suppress(AttributeError, ValueError):
        context.num_tickets = config.send_tls13_tickets
    return context


def check_listener_tls(config: HttpsListenerConfig) -> None:
    """Raise ``ValueError`` when OpenSSL cannot honour the listener's TLS settings."""
    try:
        _base_context(config)
    except ssl.SSLError as error:
        raise ValueError(f"TLS settings of {config.address} refused by OpenSSL: {error}") from None


def build_context(
    config: HttpsListenerConfig, certificate: str, chain: list[str], key: str
) -> ssl.SSLContext:
    """A server context for one certificate. The PEM texts go through a private temporary
    directory (``ssl`` loads certificates from files only) that is removed at once."""
    context = _base_context(config)
    directory = tempfile.mkdtemp(prefix="sozu-tls-")
    try:
        os.chmod(directory, 0o700)
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        leaf = certificate if certificate.endswith("\n") else certificate + "\n"
        extra = "".join(
            p if p.endswith("\n") else p + "\n" for p in chain if p.strip() != certificate.strip()
        )
        for path, text in ((cert_path, leaf + extra), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as error:
            raise ValueError(
                f"OpenSSL refused the certificate or key: {error.reason or error}"
            ) from None
    finally:
        for name in ("cert.pem", "key.pem"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
        with contextlib.suppress(OSError):
            os.rmdir(directory)
    return context


class TlsRuntime:
    """The certificates of one HTTPS listener, and the handshake context that picks them."""

    def __init__(self, config: HttpsListenerConfig) -> None:
        self.config = config
        self.contexts: dict[str, ssl.SSLContext] = {}  # fingerprint → context
        self.names_of: dict[int, tuple[str, ...]] = {}  # id(context) → names it serves
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}  # parent domain → context of *.parent
        self._entries: dict[str, CertificateSummary] = {}
        self._keys: dict[str, str] = {}  # fingerprint → PEM key (to rebuild on reconfigure)
        self.context = self._handshake_context()

    def _handshake_context(self) -> ssl.SSLContext:
        context = _base_context(self.config)
        context.sni_callback = self._select
        return context

    def reconfigure(self, config: HttpsListenerConfig) -> None:
        """New listener settings: rebuild every context (established connections keep theirs)."""
        self.config = config
        self.context = self._handshake_context()
        keys = dict(self._keys)
        entries = dict(self._entries)
        self.contexts.clear()
        self._entries.clear()
        self._install(entries, keys)

    def sync(
        self, certificates: dict[str, CertificateSummary], state: ConfigState, address: str
    ) -> None:
        """Make the listener serve exactly ``certificates`` (the state's, for this address)."""
        keys = {fp: state.private_key(address, fp) or "" for fp in certificates}
        self._install(certificates, keys)

    def _install(self, certificates: dict[str, CertificateSummary], keys: dict[str, str]) -> None:
        fresh: dict[str, ssl.SSLContext] = {}
        for fingerprint, entry in certificates.items():
            known = self._entries.get(fingerprint)
            context = self.contexts.get(fingerprint)
            if context is None or known != entry:
                context = build_context(
                    self.config, entry.certificate, list(entry.certificate_chain), keys[fingerprint]
                )
            fresh[fingerprint] = context
            self.names_of[id(context)] = tuple(fold_hostname(name) for name in entry.names)
        self._keys = {fp: keys[fp] for fp in certificates}
        # the name tables are rebuilt aside and swapped in one assignment each
        ranked = sorted(
            certificates.items(),
            key=lambda item: (item[1].expired_at or item[1].not_after.timestamp(), item[0]),
        )
        exact: dict[str, ssl.SSLContext] = {}
        wildcard: dict[str, ssl.SSLContext] = {}
        for fingerprint, entry in ranked:  # later expiry overwrites: it wins
            for name in entry.names:
                if name.startswith("*."):
                    wildcard[name[2:]] = fresh[fingerprint]
                else:
                    exact[name] = fresh[fingerprint]
        self.exact, self.wildcard = exact, wildcard
        for fingerprint, context in self.contexts.items():
            if fingerprint not in fresh:
                self.names_of.pop(id(context), None)
        self.contexts = fresh
        self._entries = dict(certificates)

    def lookup(self, name: str | None) -> ssl.SSLContext | None:
        """The context of the certificate covering ``name`` (see
        :func:`sozu_config.grammar.name_covers`): exact names first, then one-label wildcards."""
        if name:
            name = fold_hostname(name)
            context = self.exact.get(name)
            if context is not None:
                return context
            parent = wildcard_parent(name)
            if parent:
                context = self.wildcard.get(parent)
                if context is not None:
                    return context
        return None

    def _select(self, ssl_object: Any, server_name: str | None, _context: Any) -> int | None:
        context = self.lookup(server_name)
        if context is None and self.config.default_sni:
            context = self.lookup(self.config.default_sni)
        if context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_object.context = context
        ssl_object.requested_name = server_name or ""  # read by requested_name()
        return None

    @staticmethod
    def requested_name(ssl_object: Any) -> str:
        """The name the client asked for in its handshake (SNI), "" when it sent none."""
        return getattr(ssl_object, "requested_name", "")

    def names_for(self, ssl_object: Any) -> tuple[str, ...]:
        """Names of the certificate a connection was served, folded (for strict SNI binding:
        :func:`~sozu_config.grammar.folded_names_cover`)."""
        return self.names_of.get(id(ssl_object.context), ())

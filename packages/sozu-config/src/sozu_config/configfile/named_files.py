"""The files a configuration names: answer templates, certificates, keys and chains.

The models carry content, never paths: those files are read while loading. Relative paths are
looked up in the configuration file's directory first, then in the current working directory
(sōzu's rule), so that both layouts work. A file is read once per load, and a certificate is
read and checked once however many tables name it.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..certificates import (
    CertificateAndKey,
    CertificateError,
    CertificateInfo,
    certificate_info,
    check_key_matches,
    split_pem_chain,
)
from ..files import read_regular_text
from ..models import TlsVersion
from .errors import ConfigError, Findings, show, validation_reason

__all__ = ["MAX_NAMED_FILE_BYTES", "LoadedCertificate", "NamedFiles"]

# Largest file a configuration names (certificate chains, keys, answer templates).
MAX_NAMED_FILE_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class LoadedCertificate:
    """A certificate read from files, checked, and ready to be added to listeners."""

    request_body: CertificateAndKey
    fingerprint: str
    names: tuple[str, ...]
    source: Path


@dataclass(slots=True)
class NamedFiles:
    """Reads the files named by one configuration, with the caches of one load."""

    findings: Findings
    base_dir: Path
    files: dict[tuple[str, str], tuple[Path, str]] = field(default_factory=dict)
    certificates: dict[tuple[str, str, str | None, tuple[TlsVersion, ...]], LoadedCertificate] = (
        field(default_factory=dict)
    )
    expiry_checked: set[str] = field(default_factory=set)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def _error(self, table: str, key: str | None, reason: str) -> ConfigError:
        return self.findings.error(table, key, reason)

    def config_path(self, raw: str) -> Path:
        """A path of the settings: relative ones are relative to the file's directory."""
        return Path(os.path.normpath(self.base_dir / raw))

    def read(self, table: str, key: str, raw: str, what: str) -> tuple[Path, str]:
        """Read a file named by the configuration: relative paths are looked up in the
        configuration's directory, then in the working directory (sōzu's rule)."""
        cached = self.files.get((raw, what))
        if cached is not None:
            return cached
        if not raw:
            raise self._error(table, key, f"expected the path of {what}, found an empty string")
        given = Path(raw)
        if given.is_absolute():
            candidates = [given]
        else:
            candidates = list(dict.fromkeys([self.base_dir / given, Path.cwd() / given]))
        chosen = None
        for candidate in candidates:
            try:
                candidate.stat()
            except (FileNotFoundError, NotADirectoryError):
                continue
            except (OSError, ValueError) as error:  # a name too long, a NUL byte…
                reason = getattr(error, "strerror", None) or str(error)
                raise self._error(table, key, f"cannot read {what} {raw!r}: {reason}") from None
            chosen = candidate
            break
        if chosen is None:
            tried = " and ".join(str(c) for c in candidates)
            raise self._error(table, key, f"{what} {raw!r} not found (looked for {tried})")
        chosen = Path(os.path.normpath(chosen))
        try:
            text = read_regular_text(chosen, MAX_NAMED_FILE_BYTES)
        except UnicodeDecodeError:
            raise self._error(table, key, f"{what} {chosen} is not UTF-8 text") from None
        except OSError as error:
            raise self._error(
                table, key, f"cannot read {what} {chosen}: {error.strerror}"
            ) from None
        self.files[(raw, what)] = (chosen, text)
        return chosen, text

    # ------------------------------------------------------------------ answers

    def answers(
        self, table: str, legacy: dict[str, str | None], entries: dict[str, Any] | None
    ) -> dict[int, str]:
        """Answer templates by status: legacy ``answer_NNN`` files, then the ``answers`` table
        (which wins on collision). Empty values are ignored."""
        found: dict[int, str] = {}
        for key, raw in legacy.items():
            if raw:
                status = int(key.removeprefix("answer_"))
                found[status] = self.read(table, key, raw, "answer template")[1]
        sub = f"{table}.answers"
        for status_text, value in (entries or {}).items():
            if not status_text.isascii() or not status_text.isdigit():
                raise self._error(
                    sub, status_text, "expected an HTTP status code (100-599) as the key"
                )
            status = int(status_text)
            if not 100 <= status <= 599:
                raise self._error(sub, status_text, f"{status} is not an HTTP status (100-599)")
            if type(value) is not str:
                raise self._error(
                    sub,
                    status_text,
                    f"expected a template text or 'file://<path>', found {show(value)}",
                )
            if not value:
                continue
            if value.startswith("file://"):
                value = self.read(
                    sub, status_text, value.removeprefix("file://"), "answer template"
                )[1]
            found[status] = value
        return found

    # ------------------------------------------------------------------ certificates

    def certificate(
        self,
        table: str,
        certificate_path: str | None,
        key_path: str | None,
        chain_path: str | None,
        versions: tuple[TlsVersion, ...] = (),
    ) -> LoadedCertificate | None:
        """The certificate of a listener or frontend, read and checked; ``None`` without one.
        ``versions`` are a frontend's ``tls_versions`` (a listener's are its own setting)."""
        if certificate_path is None and key_path is None:
            if chain_path is not None:
                raise self._error(table, "certificate_chain", "needs certificate and key")
            return None
        if certificate_path is None:
            raise self._error(table, "key", "a key is given without its certificate")
        if key_path is None:
            raise self._error(table, "certificate", "a certificate is given without its key")
        cache_key = (certificate_path, key_path, chain_path, versions)
        cached = self.certificates.get(cache_key)
        if cached is None:
            cached = self._read_certificate(table, certificate_path, key_path, chain_path, versions)
            self.certificates[cache_key] = cached
        return cached

    def _read_certificate(
        self,
        table: str,
        certificate_path: str,
        key_path: str,
        chain_path: str | None,
        versions: tuple[TlsVersion, ...],
    ) -> LoadedCertificate:
        leaf_file, leaf_text = self.read(table, "certificate", certificate_path, "certificate")
        key_file, key_text = self.read(table, "key", key_path, "private key")
        blocks = split_pem_chain(leaf_text)
        if not blocks:
            raise self._error(
                table, "certificate", f"{leaf_file} holds no PEM certificate (BEGIN CERTIFICATE)"
            )
        try:
            info = certificate_info(blocks[0])
        except CertificateError as error:
            raise self._error(table, "certificate", f"{leaf_file}: {error}") from None
        # certificates after the leaf in the certificate file (a "fullchain") start the chain
        kept = self._chain_without(table, blocks[1:] + self._chain(table, chain_path), info)
        try:
            check_key_matches(blocks[0], key_text)
        except CertificateError as error:
            reason = str(error)
            if "does not match" in reason:
                reason = (
                    f"the private key in {key_file} does not match the certificate in {leaf_file}"
                )
            else:
                reason = f"{key_file}: {reason}"
            raise self._error(table, "key", reason) from None
        if not info.names:
            raise self._error(
                table,
                "certificate",
                f"{leaf_file} ({info.subject}) names no host (no CN, no DNS subject "
                "alternative name)",
            )
        try:
            body = CertificateAndKey.model_validate(
                {
                    "certificate": blocks[0],
                    "certificate_chain": kept,
                    "key": key_text,
                    "versions": list(versions),
                },
                strict=True,
            )
        except ValidationError as error:
            reason = validation_reason(error.errors(include_url=False)[0])
            raise self._error(table, "certificate", reason) from None
        self._check_validity(table, leaf_file, info)
        return LoadedCertificate(body, info.fingerprint, info.names, leaf_file)

    def _chain_without(self, table: str, chain: list[str], leaf: CertificateInfo) -> list[str]:
        """The chain, checked, without the copies of the leaf that sōzu drops."""
        kept: list[str] = []
        for index, pem in enumerate(chain):
            try:
                entry = certificate_info(pem)
            except CertificateError as error:
                raise self._error(
                    table, "certificate_chain", f"chain certificate {index + 1}: {error}"
                ) from None
            if entry.fingerprint != leaf.fingerprint:
                kept.append(pem)
        return kept

    def _chain(self, table: str, chain_path: str | None) -> list[str]:
        if chain_path is None:
            return []
        chain_file, chain_text = self.read(
            table, "certificate_chain", chain_path, "certificate chain"
        )
        blocks = split_pem_chain(chain_text)
        if not blocks:
            raise self._error(
                table,
                "certificate_chain",
                f"{chain_file} holds no PEM certificate (BEGIN CERTIFICATE)",
            )
        return blocks

    def _check_validity(self, table: str, leaf_file: Path, info: CertificateInfo) -> None:
        """Warn (once per certificate) about one that expired or is not valid yet: the
        daemon's ``expired_certificates`` policy decides what to do with it."""
        if info.fingerprint in self.expiry_checked:
            return
        self.expiry_checked.add(info.fingerprint)
        listed = ", ".join(info.names)
        if info.not_after < self.now:
            self.findings.warn(
                table,
                "certificate",
                f"certificate {leaf_file} for names {listed} expired on "
                f"{info.not_after:%Y-%m-%d %H:%M:%S} UTC (the daemon's "
                "expired_certificates policy decides whether it is served)",
            )
        elif info.not_before > self.now:
            self.findings.warn(
                table,
                "certificate",
                f"certificate {leaf_file} for names {listed} is not valid before "
                f"{info.not_before:%Y-%m-%d %H:%M:%S} UTC",
            )

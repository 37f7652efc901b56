"""Checks the main process makes before a request reaches its state, with the very code the
workers will run: answer templates parse, OpenSSL accepts the TLS settings and certificates,
the expired-certificate policy holds. A request refused here changes nothing anywhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sozu_config import requests as rq
from sozu_config.certificates import CertificateAndKey, CertificateError, inspect
from sozu_config.config import Config
from sozu_config.models import HttpsListenerConfig
from sozu_config.responses import ErrorKind
from sozu_config.state import ConfigState

from ..worker.answers import AnswerTemplate, TemplateError
from ..worker.tls import build_context, check_listener_tls

__all__ = ["RuntimeCheckError", "check_request"]


class RuntimeCheckError(ValueError):
    """The request cannot be served; the message says why (never with key material).
    ``kind`` is what the failure answer carries; ``index`` is the position of the refused
    request in a batch (``None`` for a single request)."""

    kind = ErrorKind.INVALID

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


def _templates(answers: dict[int, str] | None, where: str) -> None:
    for status, text in (answers or {}).items():
        try:
            AnswerTemplate.parse(text, status=status, name=f"{where} answer {status}")
        except TemplateError as error:
            raise RuntimeCheckError(str(error)) from None


def _https_config(address: str, state: ConfigState, batch: list[Any]) -> HttpsListenerConfig:
    for request in batch:
        if isinstance(request, rq.AddHttpsListener) and request.listener.address == address:
            return request.listener
    existing = state.https_listeners.get(address)
    return existing if existing is not None else HttpsListenerConfig(address=address)


def _certificate(
    certificate: CertificateAndKey,
    expired_at: int | None,
    listener: HttpsListenerConfig,
    config: Config,
) -> None:
    try:
        info = inspect(certificate)
    except CertificateError as error:
        raise RuntimeCheckError(f"certificate refused: {error}") from None
    now = dt.datetime.now(dt.UTC)
    if info.expired(now) and config.expired_certificates == "refuse":
        raise RuntimeCheckError(
            f"certificate refused: the certificate for {', '.join(info.names)} expired on "
            f'{info.not_after:%Y-%m-%d} (set expired_certificates = "warn" to accept expired '
            "certificates)"
        )
    try:
        build_context(
            listener, certificate.certificate, certificate.certificate_chain, certificate.key
        )
    except ValueError as error:
        raise RuntimeCheckError(f"certificate refused: {error}") from None


def check_request(request: rq.Request, state: ConfigState, config: Config) -> None:
    """Raise :class:`RuntimeCheckError` when a worker could not serve ``request``."""
    batch = list(request.requests) if isinstance(request, rq.Batch) else [request]
    for index, item in enumerate(batch):
        try:
            _check_one(item, state, config, batch)
        except RuntimeCheckError as error:
            if isinstance(request, rq.Batch):
                raise RuntimeCheckError(
                    f"request {index + 1} of {len(batch)} ({item.describe()}) refused: {error}; "
                    "nothing was applied",
                    index,
                ) from None
            raise


def _check_one(item: Any, state: ConfigState, config: Config, batch: list[Any]) -> None:
    """The checks of one request (``batch``: the requests around it, for listeners it adds)."""
    if isinstance(item, (rq.AddHttpListener, rq.AddHttpsListener)):
        _templates(item.listener.answers, f"listener {item.listener.address}")
        if isinstance(item, rq.AddHttpsListener):
            try:
                check_listener_tls(item.listener)
            except ValueError as error:
                raise RuntimeCheckError(str(error)) from None
    elif isinstance(item, (rq.UpdateHttpListener, rq.UpdateHttpsListener)):
        _templates(item.answers, f"listener {item.address}")
        if isinstance(item, rq.UpdateHttpsListener) and item.address in state.https_listeners:
            current = state.https_listeners[item.address]
            data = current.model_dump()
            data.update(item.patch())
            try:
                check_listener_tls(HttpsListenerConfig.model_validate(data))
            except ValueError as error:
                raise RuntimeCheckError(str(error)) from None
    elif isinstance(item, rq.AddCluster):
        _templates(item.cluster.answers, f"cluster {item.cluster.cluster_id}")
    elif isinstance(item, rq.AddCertificate):
        _certificate(
            item.certificate, item.expired_at, _https_config(item.address, state, batch), config
        )
    elif isinstance(item, rq.ReplaceCertificate):
        _certificate(
            item.new_certificate,
            item.new_expired_at,
            _https_config(item.address, state, batch),
            config,
        )

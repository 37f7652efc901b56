"""Certificates of the HTTPS listeners: list, add, replace, remove.

The CLI reads the PEM files and checks them (the certificate parses, the key matches it) before
anything is sent, so that a wrong file is a usage error (exit 2) rather than a refusal. Listings
show names, fingerprints and expiry dates; private keys are never printed.

A fingerprint is given as its 64 hex digits or as a prefix of at least
:data:`SHORT_FINGERPRINT` digits, as listings and plans show it; a prefix that names no
certificate, or several, is a usage error that lists the candidates.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from sozu_config import (
    AddCertificate,
    CertificateAndKey,
    CertificateError,
    CertificateSummary,
    QueryCertificates,
    QueryCertificatesFromWorkers,
    RemoveCertificate,
    ReplaceCertificate,
    Response,
    TlsVersion,
    fingerprint_of,
)
from sozu_config.certificates import inspect, split_pem_chain
from sozu_config.responses import CertificatesContent, WorkerResponses

from ..arguments import address, pem_file
from ..context import Context, content_of
from ..declarations import Arg, Command, Completer, OneOf, listing
from ..errors import UsageError
from ..output import Output

__all__ = [
    "COMMANDS",
    "LIST_ARGS",
    "SHORT_FINGERPRINT",
    "certificate_list",
    "fingerprint",
    "resolve_fingerprint",
    "show_certificates",
]

SHORT_FINGERPRINT = 16
"""Hex digits of a fingerprint that listings and plans show, and the shortest prefix accepted
(64 bits: two certificates of one proxy share one by accident with odds of about 2**-64)."""
_FULL_FINGERPRINT = 64


def fingerprint(text: str) -> str:
    """A SHA-256 fingerprint or a prefix of it: 16 to 64 hex digits (colons allowed), in
    lowercase."""
    value = text.replace(":", "").strip().lower()
    if not SHORT_FINGERPRINT <= len(value) <= _FULL_FINGERPRINT or any(
        c not in "0123456789abcdef" for c in value
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a SHA-256 fingerprint: give its 64 hex digits or the first "
            f"{SHORT_FINGERPRINT} or more, as 'sozu certificate list' shows"
        )
    return value


def _candidate(summary: CertificateSummary) -> str:
    return f"{summary.fingerprint} on {summary.address} ({', '.join(summary.names) or 'no name'})"


def resolve_fingerprint(ctx: Context, prefix: str, address: str) -> str:
    """The full fingerprint of the one certificate of the listener ``address`` whose
    fingerprint starts with ``prefix`` (a full fingerprint is returned as it is: the daemon
    says when it has none). Usage error when none or several match."""
    if len(prefix) == _FULL_FINGERPRINT:
        return prefix
    response = ctx.send(QueryCertificates())
    if not response.ok:
        ctx.finish(response)  # raises
    known: list[CertificateSummary] = content_of(response, CertificatesContent).certificates
    matching = [c for c in known if c.fingerprint.startswith(prefix)]
    here = [c for c in matching if str(c.address) == address]
    fingerprints = sorted({c.fingerprint for c in here})
    if len(fingerprints) == 1:
        return fingerprints[0]
    if len(fingerprints) > 1:
        listed = "; ".join(_candidate(c) for c in sorted(here, key=lambda c: c.fingerprint))
        raise UsageError(
            f"the fingerprint {prefix} is ambiguous on {address}: it starts {listed}; "
            "give more digits"
        )
    if matching:
        hint = "it names " + "; ".join(_candidate(c) for c in matching)
    else:
        on_listener = sorted(
            {c.fingerprint[:SHORT_FINGERPRINT] for c in known if str(c.address) == address}
        )
        hint = f"{address} has " + (", ".join(on_listener) if on_listener else "no certificate")
    raise UsageError(f"no certificate of {address} has a fingerprint starting {prefix}: {hint}")


def _certificate(
    certificate: str, chain: str | None, key: str, args: argparse.Namespace
) -> CertificateAndKey:
    """The request form of a certificate, checked (parses, key matches)."""
    blocks = split_pem_chain(certificate)
    value = CertificateAndKey(
        # a certificate file may hold the chain after the leaf (a "fullchain" file)
        certificate=blocks[0] if blocks else certificate,
        certificate_chain=split_pem_chain(chain) if chain else blocks[1:],
        key=key,
        versions=args.tls_versions or [],
        names=[n.strip() for n in (args.names or "").split(",") if n.strip()],
    )
    try:
        inspect(value)
    except CertificateError as error:
        raise UsageError(f"{error} (check the --certificate and --key files)") from None
    return value


def _fingerprint_of_file(pem: str) -> str:
    try:
        return fingerprint_of(pem)
    except CertificateError as error:
        raise UsageError(str(error)) from None


def show_certificates(
    output: Output,
    certificates: list[CertificateSummary],
    *,
    title: str | None = None,
    full: bool = False,
) -> None:
    """A table of certificates: address, names, expiry, fingerprint (its first
    :data:`SHORT_FINGERPRINT` digits, as plans show it, or all of them when ``full``); the
    fingerprint is never cut on a narrow terminal."""
    now = dt.datetime.now(dt.UTC)
    if not certificates:
        output.print(f"{title}: no certificate" if title else "no certificate")
        return
    output.table(
        ["ADDRESS", "NAMES", "NOT AFTER", "FINGERPRINT"],
        [
            [
                c.address,
                c.names,
                f"{c.not_after:%Y-%m-%d %H:%M}" + (" (expired)" if c.not_after < now else ""),
                c.fingerprint if full else c.fingerprint[:SHORT_FINGERPRINT],
            ]
            for c in certificates
        ],
        title=title,
        whole=("FINGERPRINT",),
    )


def _starting(content: Any, prefix: str | None) -> Any:
    """``content`` with only the certificates whose fingerprint starts with ``prefix``."""
    if prefix is None or len(prefix) == _FULL_FINGERPRINT:
        return content  # the daemon filtered already
    if isinstance(content, CertificatesContent):
        kept = [c for c in content.certificates if c.fingerprint.startswith(prefix)]
        return CertificatesContent(certificates=kept)
    if isinstance(content, WorkerResponses):
        return WorkerResponses(
            responses={
                worker: _starting(answer, prefix) for worker, answer in content.responses.items()
            }
        )
    return content


def _by_fingerprint(response: Response, prefix: str | None) -> Response:
    """The answer, its certificates reduced to those ``-f PREFIX`` names (a filter: every
    certificate whose fingerprint starts with it)."""
    if not response.ok or response.content is None:
        return response
    return response.model_copy(update={"content": _starting(response.content, prefix)})


def certificate_list(ctx: Context) -> int:
    args = ctx.args
    prefix: str | None = args.fingerprint
    full = bool(getattr(args, "full", False))
    exact = prefix if prefix is not None and len(prefix) == _FULL_FINGERPRINT else None
    if args.workers:
        response = _by_fingerprint(
            ctx.send(QueryCertificatesFromWorkers(domain=args.domain, fingerprint=exact)),
            prefix,
        )

        def render_workers(content: Any) -> None:
            answers = content_of(response, WorkerResponses).responses
            for worker, answer in sorted(answers.items()):
                found = answer.certificates if isinstance(answer, CertificatesContent) else []
                show_certificates(ctx.output, found, title=f"worker {worker}", full=full)

        return ctx.finish(response, render_workers)
    response = _by_fingerprint(
        ctx.send(QueryCertificates(domain=args.domain, fingerprint=exact)), prefix
    )

    def render(content: Any) -> None:
        found = content_of(response, CertificatesContent).certificates
        show_certificates(ctx.output, found, full=full)

    return ctx.finish(response, render)


def certificate_add(ctx: Context) -> int:
    args = ctx.args
    certificate = _certificate(args.certificate, args.certificate_chain, args.key, args)
    return ctx.run(AddCertificate(address=args.address, certificate=certificate))


def certificate_replace(ctx: Context) -> int:
    args = ctx.args
    if args.fingerprint:
        old = resolve_fingerprint(ctx, args.fingerprint, args.address)
    else:
        old = _fingerprint_of_file(args.old_certificate)
    certificate = _certificate(args.new_certificate, args.new_certificate_chain, args.new_key, args)
    return ctx.run(
        ReplaceCertificate(address=args.address, new_certificate=certificate, old_fingerprint=old)
    )


def certificate_remove(ctx: Context) -> int:
    args = ctx.args
    if args.fingerprint:
        old = resolve_fingerprint(ctx, args.fingerprint, args.address)
    else:
        old = _fingerprint_of_file(args.certificate)
    return ctx.run(RemoveCertificate(address=args.address, fingerprint=old))


# --------------------------------------------------------------------------- commands

_PEM = Completer.FILE
_LISTENER = Arg(
    ("-a", "--address"), required=True, type=address, metavar="ADDR", help="HTTPS listener"
)
_TLS_OPTIONS = (
    Arg(
        ("--tls-versions",),
        nargs="+",
        one_of=TlsVersion,
        metavar="VERSION",
        help=f"TLS versions of this certificate ({listing(TlsVersion)}; default: the listener's)",
    ),
    Arg(
        ("--names",),
        metavar="NAME,NAME",
        help="names served (default: the certificate's CN and SANs)",
    ),
)

_FP_HELP = f"fingerprint: 64 hex digits, or the first {SHORT_FINGERPRINT} or more"

LIST_ARGS = (
    Arg(
        ("-f", "--fingerprint"),
        type=fingerprint,
        metavar="FP",
        help=f"only the certificates whose fingerprint starts with FP ({SHORT_FINGERPRINT} to "
        "64 hex digits)",
    ),
    Arg(("-d", "--domain"), metavar="NAME", help="only certificates serving this exact name"),
    Arg(("-w", "--workers"), action="store_true", help="as each worker holds them"),
    Arg(
        ("--full",),
        action="store_true",
        help=f"show the whole fingerprints (default: their first {SHORT_FINGERPRINT} digits, "
        "as plans show them; --json always has them whole)",
    ),
)
"""The choice of certificates :func:`certificate_list` shows."""

_ADD_ARGS = (
    _LISTENER,
    Arg(
        ("--certificate",),
        required=True,
        type=pem_file,
        metavar="PEM",
        completer=_PEM,
        help="certificate file",
    ),
    Arg(
        ("--certificate-chain",),
        type=pem_file,
        metavar="PEM",
        completer=_PEM,
        help="intermediate certificates",
    ),
    Arg(
        ("--key",),
        required=True,
        type=pem_file,
        metavar="PEM",
        completer=_PEM,
        help="private key file",
    ),
    *_TLS_OPTIONS,
)

_REPLACE_ARGS = (
    _LISTENER,
    Arg(
        ("--new-certificate",),
        required=True,
        type=pem_file,
        metavar="PEM",
        completer=_PEM,
        help="new certificate",
    ),
    Arg(
        ("--new-certificate-chain",),
        type=pem_file,
        metavar="PEM",
        completer=_PEM,
        help="new intermediates",
    ),
    Arg(
        ("--new-key",),
        required=True,
        type=pem_file,
        metavar="PEM",
        completer=_PEM,
        help="new private key",
    ),
    OneOf(
        (
            Arg(
                ("--old-certificate",),
                type=pem_file,
                metavar="PEM",
                completer=_PEM,
                help="the certificate to replace",
            ),
            Arg(
                ("-f", "--fingerprint", "--old-fingerprint"),
                type=fingerprint,
                metavar="FP",
                help=f"its {_FP_HELP}",
            ),
        ),
        required=True,
    ),
    *_TLS_OPTIONS,
)

_REMOVE_ARGS = (
    _LISTENER,
    OneOf(
        (
            Arg(
                ("--certificate",),
                type=pem_file,
                metavar="PEM",
                completer=_PEM,
                help="the certificate file",
            ),
            Arg(("-f", "--fingerprint"), type=fingerprint, metavar="FP", help=f"its {_FP_HELP}"),
        ),
        required=True,
    ),
)

CERTIFICATE = Command(
    "certificate",
    help="list, add, replace or remove the certificates of HTTPS listeners",
    examples=[
        "sozu -c config.toml certificate list",
        "sozu -c config.toml certificate add -a 0.0.0.0:443 --certificate cert.pem --key key.pem",
    ],
    subcommands=[
        Command(
            "list",
            help="list certificates: address, names, expiry and fingerprint (never keys)",
            examples=[
                "sozu -c config.toml certificate list",
                "sozu -c config.toml certificate list -d example.com",
                "sozu -c config.toml certificate list --workers --json",
            ],
            args=LIST_ARGS,
            handler=certificate_list,
        ),
        Command(
            "add",
            help="add a certificate to an HTTPS listener",
            examples=[
                "sozu -c config.toml certificate add -a 0.0.0.0:443 --certificate cert.pem "
                "--certificate-chain chain.pem --key key.pem",
            ],
            args=_ADD_ARGS,
            handler=certificate_add,
        ),
        Command(
            "replace",
            help="swap a certificate for a new one in one step (the names stay covered)",
            examples=[
                "sozu -c config.toml certificate replace -a 0.0.0.0:443 --new-certificate "
                "new.pem --new-key new-key.pem --old-certificate old.pem",
                "sozu -c config.toml certificate replace -a 0.0.0.0:443 --new-certificate "
                "new.pem --new-key new-key.pem -f FINGERPRINT",
            ],
            args=_REPLACE_ARGS,
            handler=certificate_replace,
        ),
        Command(
            "remove",
            help="remove a certificate from an HTTPS listener",
            examples=[
                "sozu -c config.toml certificate remove -a 0.0.0.0:443 --certificate cert.pem",
                "sozu -c config.toml certificate remove -a 0.0.0.0:443 -f FINGERPRINT",
            ],
            args=_REMOVE_ARGS,
            handler=certificate_remove,
        ),
    ],
)

COMMANDS = (CERTIFICATE,)
"""``certificate``."""

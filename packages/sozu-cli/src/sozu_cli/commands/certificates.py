"""Certificates of the HTTPS listeners: list, add, replace, remove.

The CLI reads the PEM files and checks them (the certificate parses, the key matches it) before
anything is sent, so that a wrong file is a usage error (exit 2) rather than a refusal. Listings
show names, fingerprints and expiry dates; private keys are never printed.
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

__all__ = ["COMMANDS", "LIST_ARGS", "certificate_list", "fingerprint", "show_certificates"]


def fingerprint(text: str) -> str:
    """A SHA-256 fingerprint: 64 hex digits (colons allowed), in lowercase."""
    value = text.replace(":", "").strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a SHA-256 fingerprint (64 hex digits, see 'sozu certificate list')"
        )
    return value


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
    output: Output, certificates: list[CertificateSummary], *, title: str | None = None
) -> None:
    """A table of certificates: address, names, expiry, fingerprint."""
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
                c.fingerprint,
            ]
            for c in certificates
        ],
        title=title,
    )


def certificate_list(ctx: Context) -> int:
    args = ctx.args
    if args.workers:
        response = ctx.send(
            QueryCertificatesFromWorkers(domain=args.domain, fingerprint=args.fingerprint)
        )

        def render_workers(content: Any) -> None:
            answers = content_of(response, WorkerResponses).responses
            for worker, answer in sorted(answers.items()):
                found = answer.certificates if isinstance(answer, CertificatesContent) else []
                show_certificates(ctx.output, found, title=f"worker {worker}")

        return ctx.finish(response, render_workers)
    response = ctx.send(QueryCertificates(domain=args.domain, fingerprint=args.fingerprint))

    def render(content: Any) -> None:
        show_certificates(ctx.output, content_of(response, CertificatesContent).certificates)

    return ctx.finish(response, render)


def certificate_add(ctx: Context) -> int:
    args = ctx.args
    certificate = _certificate(args.certificate, args.certificate_chain, args.key, args)
    return ctx.run(AddCertificate(address=args.address, certificate=certificate))


def certificate_replace(ctx: Context) -> int:
    args = ctx.args
    old = args.fingerprint or _fingerprint_of_file(args.old_certificate)
    certificate = _certificate(args.new_certificate, args.new_certificate_chain, args.new_key, args)
    return ctx.run(
        ReplaceCertificate(address=args.address, new_certificate=certificate, old_fingerprint=old)
    )


def certificate_remove(ctx: Context) -> int:
    args = ctx.args
    old = args.fingerprint or _fingerprint_of_file(args.certificate)
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

LIST_ARGS = (
    Arg(("-f", "--fingerprint"), type=fingerprint, metavar="FP", help="only this certificate"),
    Arg(("-d", "--domain"), metavar="NAME", help="only certificates serving this exact name"),
    Arg(("-w", "--workers"), action="store_true", help="as each worker holds them"),
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
                help="its fingerprint",
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
            Arg(("-f", "--fingerprint"), type=fingerprint, metavar="FP", help="its fingerprint"),
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

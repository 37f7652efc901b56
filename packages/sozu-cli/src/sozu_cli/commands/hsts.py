"""``--hsts`` and its details, shared by HTTPS listeners and HTTPS frontends."""

from __future__ import annotations

import argparse

from sozu_config import Hsts

from ..arguments import given
from ..declarations import Arg
from ..errors import UsageError

__all__ = ["hsts_args", "hsts_of"]


def hsts_of(args: argparse.Namespace) -> Hsts | None:
    """The HSTS of ``--hsts``/``--no-hsts`` and the ``--hsts-*`` details (None: not given)."""
    enabled = getattr(args, "hsts", None)
    details = given(
        args,
        ("hsts_max_age", "hsts_include_subdomains", "hsts_preload", "hsts_force_replace_backend"),
    )
    if enabled is None:
        if details:
            option = "--" + next(iter(details)).replace("_", "-")
            raise UsageError(f"{option} needs --hsts")
        return None
    return Hsts(enabled=enabled, **{name.removeprefix("hsts_"): v for name, v in details.items()})


def hsts_args(*, off: str) -> tuple[Arg, ...]:
    """``--hsts`` and its details; ``off`` says what ``--no-hsts`` means there."""
    details = (
        ("include-subdomains", "add includeSubDomains"),
        ("preload", "add preload"),
        ("force-replace-backend", "replace a Strict-Transport-Security of the backend"),
    )
    return (
        Arg(
            ("--hsts",),
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"add Strict-Transport-Security to the answers (--no-hsts: {off})",
        ),
        Arg(("--hsts-max-age",), type=int, metavar="SECONDS", help="max-age (default: one year)"),
        *(
            Arg((f"--hsts-{name}",), action="store_true", default=None, help=text)
            for name, text in details
        ),
    )

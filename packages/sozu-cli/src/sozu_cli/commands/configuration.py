"""``config check``: load and validate a configuration file with the library, without a daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sozu_config.config import Config, ConfigError, load_config

from ..context import Context
from ..declarations import Arg, Command, Completer
from ..errors import UsageError
from ..health_view import check_summary
from ..output import plural

__all__ = ["COMMANDS", "summary_of"]


def summary_of(config: Config) -> dict[str, Any]:
    """What a configuration holds, counted (the state it describes and where it listens)."""
    state = config.state
    return {
        "listeners": len(state.listeners()),
        "clusters": len(state.clusters),
        "frontends": len(state.http_frontends)
        + len(state.https_frontends)
        + len(state.tcp_frontends),
        "backends": sum(len(b) for b in state.backends.values()),
        "certificates": sum(len(c) for c in state.certificates.values()),
        "health_checks": len(state.health_checks()),
        "workers": config.worker_count,
        "command_socket": str(config.command_socket),
    }


def config_check(ctx: Context) -> int:
    """Exit 0 and the summary for a valid file (warnings on stderr), 2 and the error otherwise."""
    output = ctx.output
    path = Path(ctx.args.file) if ctx.args.file else ctx.config_path
    if path is None:
        raise UsageError(
            "no configuration file: give one (sozu config check FILE), -c FILE or SOZU_CONFIG"
        )
    try:
        config = load_config(path)
    except ConfigError as error:
        output.json({"valid": False, "file": str(path), "error": str(error)})
        raise UsageError(str(error)) from None
    summary = summary_of(config)
    checks = config.state.health_checks()
    output.json(
        {
            "valid": True,
            "file": str(path),
            "summary": summary,
            "health_checks": {cid: check.model_dump(mode="json") for cid, check in checks.items()},
            "warnings": list(config.warnings),
        }
    )
    if output.json_mode:
        return 0  # the warnings are in the document
    for warning in config.warnings:
        output.warning(warning)
    counts = ", ".join(
        plural(summary[kind], kind[:-1])
        for kind in ("listeners", "clusters", "frontends", "backends", "certificates")
    )
    output.success(f"{path} is valid: {counts}")
    for cluster_id, check in checks.items():
        output.print(f"health check of {cluster_id}: {check_summary(check)}")
    output.print(
        f"command socket: {summary['command_socket']}; {plural(summary['workers'], 'worker')}"
    )
    if config.warnings:
        output.print(f"{plural(len(config.warnings), 'warning')} (see above)")
    return 0


CONFIG = Command(
    "config",
    help="check a configuration file",
    examples=["sozu -c config.toml config check", "sozu config check config.toml --json"],
    subcommands=[
        Command(
            "check",
            help="load and validate the configuration file: print its summary and warnings",
            description="Load and validate the configuration file as the daemon would (every "
            "key, certificate, template and reference). Exit 0 and print a summary and the "
            "warnings, or exit 2 and print the error.",
            examples=[
                "sozu -c config.toml config check",
                "sozu config check config.toml --json",
            ],
            args=[
                Arg(
                    ("file",),
                    nargs="?",
                    metavar="FILE",
                    completer=Completer.FILE,
                    help="the file (default: -c FILE or $SOZU_CONFIG)",
                )
            ],
            handler=config_check,
        )
    ],
)

COMMANDS = (CONFIG,)
"""``config check``."""

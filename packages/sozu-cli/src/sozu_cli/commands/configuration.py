"""``config check``: load and validate a configuration file with the library, without a daemon."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..context import Context
from ..declarations import Arg, Command, Completer
from ..errors import ExitCode, UsageError
from ..health_view import check_summary
from ..output import plural

if TYPE_CHECKING:
    from sozu_config.config import Config, ConfigError, ConfigWarning

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


def _finding(finding: ConfigError | ConfigWarning, severity: str) -> dict[str, Any]:
    """A finding as ``--json`` gives it."""
    from sozu_config.config import ConfigError, finding_line

    reason = finding.reason if isinstance(finding, ConfigError) else finding.message
    return {
        "severity": severity,
        "file": str(finding.path),
        "line": finding.line,
        "column": finding.column,
        "table": finding.table,
        "key": finding.key,
        "message": reason,
        "text": finding_line(finding),
    }


def _in_file_order(finding: ConfigError | ConfigWarning) -> tuple[bool, int, int]:
    """Located findings by line and column, then the others (in the order found)."""
    return finding.line is None, finding.line or 0, finding.column or 0


def config_check(ctx: Context) -> int:
    """Every error and warning of the file, each on a line (``file:line:column: ...``), then a
    count; exit 1 when there is an error, 0 otherwise (with the file's summary)."""
    from sozu_config.config import checked_config, finding_line

    output = ctx.output
    path = Path(ctx.args.file) if ctx.args.file else ctx.config_path
    if path is None:
        raise UsageError(
            "no configuration file: give one (sozu config check FILE), -c FILE or SOZU_CONFIG"
        )
    strict = bool(ctx.args.strict)
    config, report = checked_config(path, strict=strict)
    findings = [_finding(error, "error") for error in report.errors]
    findings += [_finding(warning, "warning") for warning in report.warnings]
    counts = f"{plural(len(report.errors), 'error')}, {plural(len(report.warnings), 'warning')}"
    document: dict[str, Any] = {
        "valid": report.ok,
        "file": str(path),
        "strict": strict,
        "errors": [f for f in findings if f["severity"] == "error"],
        "warnings": [f for f in findings if f["severity"] == "warning"],
    }
    if config is not None:
        checks = config.state.health_checks()
        document["summary"] = summary_of(config)
        document["health_checks"] = {
            cid: check.model_dump(mode="json") for cid, check in checks.items()
        }
    output.json(document)
    if output.json_mode:
        return 0 if report.ok else ExitCode.FAILURE
    for error in sorted(report.errors, key=_in_file_order):
        output.error(finding_line(error))
    for warning in sorted(report.warnings, key=_in_file_order):
        output.warning(finding_line(warning))
    if config is None:
        output.print(f"{path}: {counts}")
        return ExitCode.FAILURE
    summary = document["summary"]
    described = ", ".join(
        plural(summary[kind], kind[:-1])
        for kind in ("listeners", "clusters", "frontends", "backends", "certificates")
    )
    output.success(f"{path} is valid: {described}")
    for cluster_id, check in config.state.health_checks().items():
        output.print(f"health check of {cluster_id}: {check_summary(check)}")
    output.print(
        f"command socket: {summary['command_socket']}; {plural(summary['workers'], 'worker')}"
    )
    output.print(f"{path}: {counts}")
    return 0


CONFIG = Command(
    "config",
    help="check a configuration file",
    examples=["sozu -c config.toml config check", "sozu config check --strict config.toml"],
    subcommands=[
        Command(
            "check",
            help="check the configuration file: every error and warning, with file:line:column",
            description="Load and validate the configuration file as the daemon would (every "
            "key, certificate, template and reference), and check that every HTTPS hostname "
            "is covered by a certificate of its listener. Print every error and warning at "
            "once, each as FILE:LINE:COLUMN: [table] key: reason, then their count. Exit 1 "
            "when there is an error (with --strict, a warning too), 0 otherwise with a "
            "summary of the file.",
            examples=[
                "sozu -c config.toml config check",
                "sozu config check config.toml --json",
                "sozu config check --strict config.toml",
            ],
            args=[
                Arg(
                    ("--strict",),
                    action="store_true",
                    help="treat warnings as errors (exit 1 when there is one)",
                ),
                Arg(
                    ("file",),
                    nargs="?",
                    metavar="FILE",
                    completer=Completer.FILE,
                    help="the file (default: -c FILE or $SOZU_CONFIG)",
                ),
            ],
            handler=config_check,
        )
    ],
)

COMMANDS = (CONFIG,)
"""``config check``."""

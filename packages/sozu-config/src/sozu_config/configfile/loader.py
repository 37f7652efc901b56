"""Reading ``config.toml``: the text, its top-level settings, then every table in file order.

:func:`load_config` stops at the first error and raises it; :func:`check_config` reads the
whole file and reports every error it finds (each table is read on its own, so a bad table
does not hide the errors of the next ones) with the warnings, each located by line and column
(:mod:`.positions`); :func:`load_checked` loads a file only when it has no error, refusing it
with all of them.
"""

from __future__ import annotations

import difflib
import gc
import os
import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from ..files import read_regular
from ..state import ConfigState
from .errors import (
    ConfigError,
    ConfigRefused,
    ConfigReport,
    ConfigWarning,
    Findings,
    TableRefused,
    guarded,
    record_refusal,
    show,
    validate_table,
    validation_errors,
)
from .models import (
    GLOBAL_KEYS,
    GLOBAL_PATH_KEYS,
    IGNORED_GLOBALS,
    GlobalsFile,
    MetricsFile,
)
from .named_files import NamedFiles
from .positions import Position, key_positions, position_of
from .rules import METRICS_HINTS, Assembly, read_admin
from .settings import (
    DEFAULT_COMMAND_BUFFER_SIZE,
    DEFAULT_MAX_COMMAND_BUFFER_SIZE,
    AdminSettings,
    Config,
    MetricsSettings,
)
from .tables import read_cluster, read_listener

__all__ = [
    "MAX_CONFIG_BYTES",
    "check_config",
    "check_config_text",
    "checked_config",
    "load_checked",
    "load_config",
    "load_config_text",
]

# Largest configuration file read (100,000 clusters fit).
MAX_CONFIG_BYTES = 256 * 1024 * 1024

_DEFAULTS = Config.model_fields
_SYNTAX_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


# --------------------------------------------------------------------------- entry points


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, validate and interpret a ``config.toml`` file.

    Raises :class:`ConfigError` for a missing or unreadable file, a TOML syntax error and the
    first invalid setting (with ``line`` and ``column`` where the text has its table or key).
    """
    source = Path(path)
    return load_config_text(_read_text(source), path=source)


def load_config_text(
    text: str, *, path: Path | None = None, base_dir: Path | None = None
) -> Config:
    """Validate and interpret configuration text.

    ``path`` names the text in messages and becomes ``Config.path``; ``base_dir`` is the
    directory relative paths are resolved against (default: the directory of ``path``, else
    the working directory). Errors from text without a path name it ``<string>``.
    """
    try:
        config, _ = _run(text, path, base_dir, collect=False)
    except ConfigError as error:
        if error.line is not None:
            raise
        raise _located(key_positions(text), error) from None
    return config


def check_config(path: str | os.PathLike[str], *, strict: bool = False) -> ConfigReport:
    """Every error and warning of a ``config.toml`` file (none raised): what
    :func:`load_config` would refuse, all at once. ``strict`` makes the warnings errors."""
    source = Path(path)
    try:
        text = _read_text(source)
    except ConfigError as error:
        return ConfigReport(source, (error,), ())
    return check_config_text(text, path=source, strict=strict)


def check_config_text(
    text: str, *, path: Path | None = None, base_dir: Path | None = None, strict: bool = False
) -> ConfigReport:
    """Every error and warning of configuration text (arguments as for
    :func:`load_config_text` and :func:`check_config`)."""
    return _checked(text, path, base_dir, strict=strict)[1]


def load_checked(path: str | os.PathLike[str], *, strict: bool = False) -> Config:
    """:func:`load_config`, refusing a file with errors with every one of them: raises
    :class:`ConfigRefused` (its ``report`` holds them; ``str`` lists them, one a line)."""
    config, report = checked_config(path, strict=strict)
    if config is None:
        raise ConfigRefused(report)
    return config


def checked_config(
    path: str | os.PathLike[str], *, strict: bool = False
) -> tuple[Config | None, ConfigReport]:
    """The file's :class:`ConfigReport`, and its configuration when it has no error (read
    once: :func:`check_config` and :func:`load_config` together)."""
    source = Path(path)
    try:
        text = _read_text(source)
    except ConfigError as error:
        return None, ConfigReport(source, (error,), ())
    config, report = _checked(text, source, None, strict=strict)
    return (config if report.ok else None), report


def _checked(
    text: str, path: Path | None, base_dir: Path | None, *, strict: bool
) -> tuple[Config, ConfigReport]:
    config, findings = _run(text, path, base_dir, collect=True)
    # the text is scanned for positions only when there is something to locate
    positions = key_positions(text) if findings.errors or findings.warnings else {}
    errors = [_located(positions, error) for error in findings.errors]
    warnings = tuple(_located(positions, warning) for warning in dict.fromkeys(findings.warnings))
    if strict:
        errors.extend(
            ConfigError(
                f"{warning.message} (a warning, refused with --strict)",
                path=warning.path,
                table=warning.table,
                key=warning.key,
                line=warning.line,
                column=warning.column,
            )
            for warning in warnings
        )
        warnings = ()
    return config, ConfigReport(findings.source, tuple(errors), warnings)


_Finding = TypeVar("_Finding", ConfigError, ConfigWarning)


def _located(positions: dict[str, Position], finding: _Finding) -> _Finding:
    """``finding`` with the line and column of its table or key, when the text has them."""
    if finding.line is not None or (finding.table is None and finding.key is None):
        return finding
    position = position_of(positions, finding.table, finding.key)
    return finding if position is None else finding.at(*position)


def _read_text(source: Path) -> str:
    try:
        raw = read_regular(source, MAX_CONFIG_BYTES)
    except OSError as error:
        raise ConfigError(
            f"cannot read the configuration file: {error.strerror or error}", path=source
        ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"the configuration file is not UTF-8 text (byte {error.start})", path=source
        ) from None


def _run(
    text: str, path: Path | None, base_dir: Path | None, *, collect: bool
) -> tuple[Config, Findings]:
    source = path if path is not None else Path("<string>")
    if base_dir is None:
        base_dir = path.parent if path is not None else Path.cwd()
    findings = Findings(source, collect=collect)
    files = NamedFiles(findings, Path(os.path.abspath(base_dir)))
    # Loading allocates hundreds of thousands of objects and frees almost none: the cyclic
    # collector would rescan them again and again for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        config, state = _read_document(findings, files, _parse(text, findings))
    except ConfigError as error:  # the file as a whole (its syntax)
        findings.record(error)
        return Config(command_socket=files.config_path("sozu.sock")), findings
    finally:
        if collecting:
            gc.enable()
    return config.model_copy(
        update={
            "path": Path(os.path.abspath(path)) if path is not None else None,
            "state": state,
            "warnings": tuple(dict.fromkeys(findings.warnings)),
        }
    ), findings


def _parse(text: str, findings: Findings) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        position = _SYNTAX_POSITION.search(message)
        line = column = None
        if position is not None:
            line, column = int(position.group(1)), int(position.group(2))
            message = message[: position.start()]
        raise ConfigError(
            f"TOML syntax error: {message}", path=findings.source, line=line, column=column
        ) from None


def _read_document(
    findings: Findings, files: NamedFiles, document: dict[str, Any]
) -> tuple[Config, ConfigState]:
    config = _globals(findings, files, document)
    assembly = Assembly(findings, files, config)
    listeners = document.get("listeners", [])
    if type(listeners) is not list:
        reason = f"expected an array of [[listeners]] tables, found {show(listeners)}"
        findings.record(findings.error(None, "listeners", reason))
    else:
        for index, entry in enumerate(listeners):
            guarded(findings, read_listener, assembly, index, entry)
    clusters = document.get("clusters", {})
    if type(clusters) is not dict:
        findings.record(
            findings.error(None, "clusters", f"expected a table, found {show(clusters)}")
        )
    else:
        for cluster_id, entry in clusters.items():
            guarded(findings, read_cluster, assembly, cluster_id, entry)
    return config, assembly.build_state()


# --------------------------------------------------------------------------- top level


def _globals(findings: Findings, files: NamedFiles, document: dict[str, Any]) -> Config:
    """The top-level settings; when they are refused (and errors are collected), the
    defaults, so that the tables can still be checked."""
    try:
        return _read_globals(findings, files, document)
    except ConfigError as error:
        findings.record(error)
    except TableRefused as refused:
        findings.record(*refused.errors)
    return Config(command_socket=files.config_path("sozu.sock"))


def _read_globals(findings: Findings, files: NamedFiles, document: dict[str, Any]) -> Config:
    settings: dict[str, Any] = {}
    admin = None
    tables: dict[str, Any] = {}  # settings read from their own table ([metrics])
    for key, value in document.items():
        if key in ("listeners", "clusters"):
            continue
        if key == "admin":
            admin = _guarded_admin(findings, files, value)
        elif key in GLOBAL_KEYS:
            settings[key] = value
        elif key == "metrics":
            guarded(findings, _read_metrics, findings, value, tables)
        elif key in IGNORED_GLOBALS:
            inert = IGNORED_GLOBALS[key]
            if value != inert or type(value) is not type(inert):
                findings.warn(None, key, "is not implemented by this proxy and is ignored")
        else:
            findings.record(findings.error(None, key, _unknown_global(key)))
    file = validate_table(findings, GlobalsFile, settings, None)
    values = {key: getattr(file, key) for key in file.model_fields_set}
    _interpret_globals(findings, files, values)
    if admin is not None:
        values["admin"] = admin
    values.update(tables)
    try:
        return Config.model_validate(values, strict=True)
    except ValidationError as error:
        raise TableRefused(
            validation_errors(findings, error, GlobalsFile, None, settings)
        ) from None


def _unknown_global(key: str) -> str:
    """``unknown top-level key``, with a did-you-mean when a known key is close."""
    known = [*GLOBAL_KEYS, *IGNORED_GLOBALS, "listeners", "clusters", "metrics", "admin"]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown top-level key; did you mean '{close[0]}'?"
    return "unknown top-level key (the keys of a table go below its [header])"


def _interpret_globals(findings: Findings, files: NamedFiles, values: dict[str, Any]) -> None:
    """From the file's settings to Config's: paths made absolute, defaults that depend on
    other settings, sōzu's special values, and the rules between settings."""
    for key in GLOBAL_PATH_KEYS:
        if key in values:
            values[key] = files.config_path(values[key])
    values.setdefault("command_socket", files.config_path("sozu.sock"))
    if values.get("command_allowed_uids") is not None:
        values["command_allowed_uids"] = tuple(values["command_allowed_uids"])
    if values.get("automatic_state_save") and "saved_state" not in values:
        raise findings.error(
            None,
            "automatic_state_save",
            "automatic_state_save = true needs saved_state (the file to save the state to)",
        )
    if values.get("access_logs_format") == "protobuf":
        del values["access_logs_format"]
        findings.warn(
            None,
            "access_logs_format",
            "protobuf access logs are not implemented and are ignored (ascii is used)",
        )
    values.setdefault("access_logs_colored", values.get("log_colored", False))
    if values.get("basic_auth_max_credential_bytes") == 0:
        values["basic_auth_max_credential_bytes"] = 4_096  # sōzu: 0 means the default
    initial = values.get("command_buffer_size", DEFAULT_COMMAND_BUFFER_SIZE)
    largest = values.get("max_command_buffer_size", DEFAULT_MAX_COMMAND_BUFFER_SIZE)
    if initial > largest:
        key = (
            "command_buffer_size" if "command_buffer_size" in values else "max_command_buffer_size"
        )
        raise findings.error(
            None,
            key,
            f"command_buffer_size ({initial}) must not be larger than max_command_buffer_size "
            f"({largest})",
        )
    minimum = values.get("min_buffers", _DEFAULTS["min_buffers"].default)
    maximum = values.get("max_buffers", _DEFAULTS["max_buffers"].default)
    if minimum > maximum:
        findings.warn(
            None,
            "min_buffers",
            f"min_buffers ({minimum}) is larger than max_buffers ({maximum}); clamped to {maximum}",
        )
        values["min_buffers"] = maximum


def _guarded_admin(findings: Findings, files: NamedFiles, value: object) -> AdminSettings | None:
    """``[admin]`` read (None when it is refused and errors are collected)."""
    try:
        return read_admin(findings, files, value)
    except (ConfigError, TableRefused) as error:
        record_refusal(findings, error)
    return None


def _read_metrics(findings: Findings, value: object, into: dict[str, Any]) -> None:
    """``[metrics]``: the statsd export's settings, into ``into["metrics"]``."""
    if type(value) is not dict:
        raise findings.error(None, "metrics", f"expected a table, found {show(value)}")
    file = validate_table(findings, MetricsFile, value, "metrics", METRICS_HINTS)
    given = {key: getattr(file, key) for key in file.model_fields_set}
    into["metrics"] = MetricsSettings.model_validate(
        {key: value for key, value in given.items() if value is not None}
    )

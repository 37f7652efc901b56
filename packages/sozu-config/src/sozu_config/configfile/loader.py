"""Reading ``config.toml``: the text, its top-level settings, then every table in file order.

:func:`load_config` stops at the first error and raises it; :func:`check_config` reads the
whole file and reports every error it finds (each table is read on its own, so a bad table
does not hide the errors of the next ones) with the warnings.
"""

from __future__ import annotations

import difflib
import gc
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..files import read_regular
from ..state import ConfigState
from .errors import (
    ConfigError,
    ConfigReport,
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
from .rules import METRICS_HINTS, Assembly, read_admin
from .settings import (
    DEFAULT_COMMAND_BUFFER_SIZE,
    DEFAULT_MAX_COMMAND_BUFFER_SIZE,
    AdminSettings,
    Config,
)
from .tables import read_cluster, read_listener

__all__ = [
    "MAX_CONFIG_BYTES",
    "check_config",
    "check_config_text",
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

    Raises :class:`ConfigError` for a missing or unreadable file, a TOML syntax error (with
    ``line`` and ``column``) and the first invalid setting.
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
    config, _ = _run(text, path, base_dir, collect=False)
    return config


def check_config(path: str | os.PathLike[str]) -> ConfigReport:
    """Every error and warning of a ``config.toml`` file (none raised): what
    :func:`load_config` would refuse, all at once."""
    source = Path(path)
    try:
        text = _read_text(source)
    except ConfigError as error:
        return ConfigReport(source, (error,), ())
    return check_config_text(text, path=source)


def check_config_text(
    text: str, *, path: Path | None = None, base_dir: Path | None = None
) -> ConfigReport:
    """Every error and warning of configuration text (arguments as for
    :func:`load_config_text`)."""
    _, findings = _run(text, path, base_dir, collect=True)
    return ConfigReport(
        findings.source, tuple(findings.errors), tuple(dict.fromkeys(findings.warnings))
    )


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
    for key, value in document.items():
        if key in ("listeners", "clusters"):
            continue
        if key == "admin":
            admin = _guarded_admin(findings, files, value)
        elif key in GLOBAL_KEYS:
            settings[key] = value
        elif key == "metrics":
            guarded(findings, _read_metrics, findings, value)
        elif key in IGNORED_GLOBALS:
            inert = IGNORED_GLOBALS[key]
            if value != inert or type(value) is not type(inert):
                findings.warn(None, key, "is not implemented by this proxy and is ignored")
        else:
            close = difflib.get_close_matches(key, GLOBAL_KEYS, n=1, cutoff=0.75)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            findings.warn(None, key, f"unknown top-level key, ignored{hint}")
    file = validate_table(findings, GlobalsFile, settings, None)
    values = {key: getattr(file, key) for key in file.model_fields_set}
    _interpret_globals(findings, files, values)
    if admin is not None:
        values["admin"] = admin
    try:
        return Config.model_validate(values, strict=True)
    except ValidationError as error:
        raise TableRefused(
            validation_errors(findings, error, GlobalsFile, None, settings)
        ) from None


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
    if values.pop("access_logs_format", "ascii") == "protobuf":
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


def _read_metrics(findings: Findings, value: object) -> None:
    """``[metrics]`` (statsd export) is checked like sōzu does, then ignored with a warning."""
    if type(value) is not dict:
        raise findings.error(None, "metrics", f"expected a table, found {show(value)}")
    validate_table(findings, MetricsFile, value, "metrics", METRICS_HINTS)
    findings.warn("metrics", None, "statsd metrics export is not implemented; the table is ignored")

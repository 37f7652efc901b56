"""Findings of a configuration file: errors and warnings located as ``file: [table] key 'k'``.

:class:`ConfigError` is one problem; :class:`Findings` gathers the problems and warnings of one
load, either stopping at the first error (``load_config``) or collecting them all
(``check_config``). :func:`validation_errors` turns a pydantic ``ValidationError`` of a file
model into located errors: the location pydantic gives (``('headers', 0, 'key')``) becomes the
table and key the file uses (``[clusters.app.frontends[0].headers[0]] key 'key'``).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

__all__ = [
    "ConfigError",
    "ConfigRefused",
    "ConfigReport",
    "ConfigWarning",
    "Findings",
    "TableRefused",
    "finding_line",
    "guarded",
    "locate",
    "record_refusal",
    "show",
    "unknown_key_reason",
    "validate_table",
    "validation_errors",
    "validation_reason",
]


def locate(path: Path, table: str | None, key: str | None) -> str:
    """``file: [table] key 'k'`` — where a finding is, as errors and warnings print it."""
    where = str(path)
    if table is not None:
        where += f": [{table}]"
        if key is not None:
            where += f" key '{key}'"
    elif key is not None:
        where += f": top-level key '{key}'"
    return where


class ConfigError(ValueError):
    """A configuration that cannot be used.

    ``str(error)`` is one paragraph naming the file, the table and the key, what was found and
    what was expected, e.g. ``examples/app.toml: [clusters.api.frontends[2]] key 'hostnme':
    unknown key (known keys: address, hostname, path, ...)``. Array entries are numbered from 0,
    as in the default backend ids. ``table`` is ``None`` for top-level keys and for problems of
    the file as a whole (unreadable file, TOML syntax error: then ``line`` and ``column`` say
    where, counted from 1).
    """

    path: Path
    table: str | None
    key: str | None
    reason: str
    line: int | None
    column: int | None

    def __init__(
        self,
        reason: str,
        *,
        path: Path,
        table: str | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.path = path
        self.table = table
        self.key = key
        self.reason = reason
        self.line = line
        self.column = column
        where = locate(path, table, key)
        if line is not None:
            where += f": line {line}, column {column}"
        super().__init__(f"{where}: {reason}")

    def at(self, line: int, column: int) -> ConfigError:
        """The same error, with where it is in the text."""
        return ConfigError(
            self.reason, path=self.path, table=self.table, key=self.key, line=line, column=column
        )


class ConfigWarning(str):
    """A warning: its text (``file: [table] key 'k': message``, what ``Config.warnings``
    holds), with the table, the key, the message and, once located, ``line`` and ``column``."""

    path: Path
    table: str | None
    key: str | None
    message: str
    line: int | None
    column: int | None

    def __new__(
        cls,
        message: str,
        *,
        path: Path,
        table: str | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> ConfigWarning:
        warning = super().__new__(cls, f"{locate(path, table, key)}: {message}")
        warning.path = path
        warning.table = table
        warning.key = key
        warning.message = message
        warning.line = line
        warning.column = column
        return warning

    def at(self, line: int, column: int) -> ConfigWarning:
        """The same warning, with where it is in the text."""
        return ConfigWarning(
            self.message, path=self.path, table=self.table, key=self.key, line=line, column=column
        )

    def __reduce__(self) -> tuple[Any, ...]:  # copies and pickles keep the attributes
        return (_warning, (self.message, self.path, self.table, self.key, self.line, self.column))


def _warning(
    message: str,
    path: Path,
    table: str | None,
    key: str | None,
    line: int | None,
    column: int | None,
) -> ConfigWarning:
    return ConfigWarning(message, path=path, table=table, key=key, line=line, column=column)


@dataclass(frozen=True, slots=True)
class ConfigReport:
    """Every finding of a configuration file: the errors (each a :class:`ConfigError`, in
    file order as far as one can be given) and the warnings (each a :class:`ConfigWarning`),
    located by line and column where the text spells their table or key. ``ok`` when there is
    no error."""

    path: Path
    errors: tuple[ConfigError, ...]
    warnings: tuple[ConfigWarning, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def finding_line(finding: ConfigError | ConfigWarning) -> str:
    """``file:line:column: [table] key 'k': reason``, as compilers and ``haproxy -c`` print
    their findings (``file: ...`` when the text does not locate it)."""
    where = str(finding.path)
    if finding.line is not None:
        where += f":{finding.line}:{finding.column}"
    table = locate(Path(""), finding.table, finding.key).removeprefix(".").removeprefix(": ")
    reason = finding.reason if isinstance(finding, ConfigError) else finding.message
    return f"{where}: {table}: {reason}" if table else f"{where}: {reason}"


class ConfigRefused(ConfigError):
    """A file with errors, refused as a whole: ``report`` holds them all, and ``str`` lists
    them, one line each (:func:`finding_line`). The first one gives the located attributes."""

    def __init__(self, report: ConfigReport) -> None:
        first = report.errors[0]
        super().__init__(
            first.reason,
            path=first.path,
            table=first.table,
            key=first.key,
            line=first.line,
            column=first.column,
        )
        self.report = report
        lines = [finding_line(error) for error in report.errors]
        if len(lines) > 1:
            lines.insert(0, f"{len(lines)} errors in {report.path}:")
        self.args = ("\n".join(lines),)

    def __str__(self) -> str:
        return str(self.args[0])


class TableRefused(Exception):
    """A table (or array entry) that cannot be used: its errors, already located. The reader
    of the enclosing table records them and goes on with the next table."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__(errors[0] if errors else "refused")
        self.errors = errors


@dataclass(slots=True)
class Findings:
    """The errors and warnings of one load. With ``collect`` false, the first error is raised
    as soon as it is recorded; otherwise every error is kept and the load goes on."""

    source: Path
    collect: bool = False
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[ConfigWarning] = field(default_factory=list)

    def error(self, table: str | None, key: str | None, reason: str) -> ConfigError:
        """An error located in this file (to be raised, or recorded with :meth:`record`)."""
        return ConfigError(reason, path=self.source, table=table, key=key)

    def record(self, *errors: ConfigError) -> None:
        """Keep ``errors``; the first one is raised when not collecting."""
        if errors and not self.collect:
            raise errors[0]
        self.errors.extend(errors)

    def warn(self, table: str | None, key: str | None, message: str) -> None:
        self.warnings.append(ConfigWarning(message, path=self.source, table=table, key=key))


# --------------------------------------------------------------------------- values in messages


def _kind(value: object) -> str:
    """The TOML type of a parsed value, as a message names it."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, dt.date | dt.time):
        return "date-time"
    return type(value).__name__


def show(value: object) -> str:
    """A short TOML-like rendering of a value found in the file, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value if len(value) <= 80 else value[:77] + "...", ensure_ascii=False)
        return f"{text} (a string)"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"an array of {len(value)} value(s)"
    if isinstance(value, int | float):
        return str(value)
    return f"{value!s} (a {_kind(value)})"


_EXPECTED_TYPES = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean (true or false)",
    "string_type": "a string",
    "dict_type": "a table",
    "model_type": "a table",
    "list_type": "an array",
    "tuple_type": "an array",
}
_BOUNDS = {"ge": "at least", "le": "at most", "gt": "more than", "lt": "less than"}


def validation_reason(item: Any) -> str:
    """One pydantic error as a sentence: what was expected and what was found."""
    kind = str(item["type"])
    message = str(item["msg"])
    if kind in ("value_error", "assertion_error"):
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return "is required"
    context = item.get("ctx") or {}
    bound = next((b for b in _BOUNDS if b in context), None)
    if kind in _EXPECTED_TYPES:
        message = f"expected {_EXPECTED_TYPES[kind]}"
    elif bound is not None and kind.endswith(("_than", "_than_equal")):
        limit = context[bound]
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)  # the bound of a float field: ``more than 0``, not ``0.0``
        message = f"must be {_BOUNDS[bound]} {limit}"
    elif message.startswith("Input should be "):
        message = "expected " + message.removeprefix("Input should be ")
    if "input" in item:
        message += f", found {show(item['input'])}"
    return message


def unknown_key_reason(key: str, known: Collection[str]) -> str:
    """``unknown key (known keys: ...)``, with a did-you-mean when one is close."""
    # the HTTP/2 settings of HTTPS listeners are many: not listed (did-you-mean finds them)
    listed = sorted(k for k in known if not k.startswith("h2_"))
    reason = f"unknown key (known keys: {', '.join(listed)})"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if close:
        reason += f"; did you mean '{close[0]}'?"
    return reason


# --------------------------------------------------------------------------- locations


@cache
def file_keys(model: type[BaseModel]) -> dict[str, tuple[type[BaseModel] | None, bool]]:
    """The keys of a file model (aliases where the file spells them differently), each with
    the file model of its sub-table (``None`` for a value) and whether it is an array of them."""
    keys: dict[str, tuple[type[BaseModel] | None, bool]] = {}
    for name, info in model.model_fields.items():
        annotation: Any = info.annotation
        origin = get_origin(annotation)
        if origin is Union or origin is UnionType:  # ``X | None``
            annotation = next(a for a in get_args(annotation) if a is not type(None))
            origin = get_origin(annotation)
        is_array = origin is list
        if is_array:
            annotation = get_args(annotation)[0]
        sub = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
        keys[info.alias or name] = (sub, is_array and sub is not None)
    return keys


def _where(
    model: type[BaseModel], location: tuple[int | str, ...], table: str
) -> tuple[str, str | None]:
    """The table and key a pydantic location names, walking into sub-tables."""
    parts = list(location)
    while parts:
        key = str(parts.pop(0))
        sub, is_array = file_keys(model).get(key, (None, False))
        if sub is None or not parts:
            return table, key
        table = f"{table}.{key}"
        if is_array:
            table += f"[{parts.pop(0)}]"
            if not parts:
                return table, None
        model = sub
    return table, None


def validation_errors(
    findings: Findings,
    error: ValidationError,
    model: type[BaseModel],
    table: str | None,
    data: Mapping[str, object],
    hints: Mapping[str, str] | None = None,
    *,
    skip: int = 0,
) -> list[ConfigError]:
    """The errors of a validation, in the order of the keys in the file, located with the
    file model of the table (``table`` is ``None`` for the top level).

    An unknown key gets the hint ``hints`` has for it, else the known keys of its table and a
    did-you-mean. ``skip`` drops the leading parts of pydantic's locations (the field of a
    request that wraps the state's model built from the table).
    """
    order = {key: position for position, key in enumerate(data)}
    located: list[tuple[int, ConfigError]] = []
    for item in error.errors(include_url=False):
        location = item["loc"][skip:]
        found_table, key = _where(model, location, table or "")
        where = found_table or None  # "" for a top-level key
        if item["type"] == "extra_forbidden" and key is not None:
            if hints and key in hints and len(location) == 1:
                reason = hints[key]
            else:
                sub = model if len(location) == 1 else _sub_model(model, location)
                reason = unknown_key_reason(key, file_keys(sub))
        else:
            reason = validation_reason(item)
        rank = order.get(str(location[0]), len(order)) if location else -1
        located.append((rank, findings.error(where, key, reason)))
    located.sort(key=lambda pair: pair[0])
    return [found for _, found in located]


def _sub_model(model: type[BaseModel], location: tuple[int | str, ...]) -> type[BaseModel]:
    """The file model of the sub-table that holds the last key of ``location``."""
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        sub = file_keys(model).get(part, (None, False))[0]
        if sub is None:
            break
        model = sub
    return model


_Model = TypeVar("_Model", bound=BaseModel)


def validate_table(
    findings: Findings,
    model: type[_Model],
    data: Mapping[str, object],
    table: str | None,
    hints: Mapping[str, str] | None = None,
) -> _Model:
    """``data`` read with its file model; raises :class:`TableRefused` with every error."""
    try:
        # the validator itself: model_validate's wrapper is one more call per table
        found: _Model = model.__pydantic_validator__.validate_python(data, strict=True)
        return found
    except ValidationError as error:
        raise TableRefused(validation_errors(findings, error, model, table, data, hints)) from None


def guarded(findings: Findings, read: Callable[..., None], *args: Any) -> bool:
    """Run ``read(*args)``, the reading of one table: its errors are recorded (the first one
    raised when not collecting). Returns whether it went through."""
    try:
        read(*args)
    except (ConfigError, TableRefused) as error:
        record_refusal(findings, error)
        return False
    return True


def record_refusal(findings: Findings, error: ConfigError | TableRefused) -> None:
    """Record what a table's reading raised (the first error is raised when not
    collecting)."""
    if isinstance(error, TableRefused):
        findings.record(*error.errors)
    else:
        findings.record(error)

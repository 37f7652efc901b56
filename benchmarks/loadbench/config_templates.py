"""Filling in the configuration files of the servers under test.

The templates live next to this module in ``templates/`` as the servers' own formats, with
``{{name}}`` placeholders: none of nginx, HAProxy or TOML uses double braces, so the templates
stay readable (nginx's ``$variables`` need no escaping, unlike with ``string.Template``).
"""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATE_DIRECTORY = Path(__file__).resolve().parent / "templates"

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class TemplateError(KeyError):
    """A template names a value that was not given, or a value was given that it never uses."""


def render(template: str, values: dict[str, str | int]) -> str:
    """Replace every ``{{name}}`` in ``template`` with ``values[name]``.

    Both directions are checked, so a typo in a template or in a caller fails loudly instead of
    producing a configuration the server may half-accept.
    """
    used = set(_PLACEHOLDER.findall(template))
    missing = used - values.keys()
    if missing:
        raise TemplateError(f"no value for {sorted(missing)}")
    unused = values.keys() - used
    if unused:
        raise TemplateError(f"values never used: {sorted(unused)}")
    return _PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), template)


def write_config(template_name: str, destination: Path, values: dict[str, str | int]) -> Path:
    """Render ``templates/<template_name>`` with ``values`` into ``destination``; return it."""
    template = (TEMPLATE_DIRECTORY / template_name).read_text(encoding="utf-8")
    destination.write_text(render(template, values), encoding="utf-8")
    return destination

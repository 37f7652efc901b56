"""JSON Schema of the command protocol, generated from the models.

``python -m sozu_config.schema`` rewrites the committed ``protocol.schema.json`` next to this
module; ``python -m sozu_config.schema --check`` exits 1 when the committed copy is out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from .protocol import PROTOCOL_VERSION, RequestMessage
from .responses import Response

__all__ = ["SCHEMA_PATH", "protocol_schema"]

SCHEMA_PATH = Path(__file__).with_name("protocol.schema.json")


def protocol_schema() -> dict[str, Any]:
    """One schema document: ``RequestMessage`` (client → daemon) and ``Response`` (answers)."""
    _, schema = models_json_schema(
        [(RequestMessage, "validation"), (Response, "serialization")],
        title=f"sozu command protocol, version {PROTOCOL_VERSION}",
    )
    schema["description"] = (
        "One JSON object per line (UTF-8, newline-terminated) on the command socket. "
        "Clients send RequestMessage objects; the daemon answers with Response objects carrying "
        "the same id: zero or more with status 'processing', then one 'ok' or 'failure'."
    )
    schema["oneOf"] = [
        {"$ref": "#/$defs/RequestMessage"},
        {"$ref": "#/$defs/Response"},
    ]
    return schema


def _render() -> str:
    return json.dumps(protocol_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = _render()
    if "--check" in args:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(
                f"{SCHEMA_PATH} is out of date: run `python -m sozu_config.schema` and commit it",
                file=sys.stderr,
            )
            return 1
        print(f"{SCHEMA_PATH} is up to date")
        return 0
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

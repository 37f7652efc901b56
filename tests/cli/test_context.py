"""How long a command waits for the daemon's answer, by request type."""

from __future__ import annotations

import argparse
from typing import Any, get_args

from sozu_cli.context import DEFAULT_TIMEOUT_MS, LONG_TIMEOUT_MS, Context
from sozu_cli.output import Output
from sozu_config import MUTATING_TYPES, QUERY_TYPES, Request


def _context(**given: Any) -> Context:
    args = argparse.Namespace(config=None, socket="/nonexistent.sock", timeout=None, **given)
    return Context(args, Output(json_mode=True))


def _every_request_type() -> set[str]:
    members = get_args(get_args(Request)[0])
    return {member.model_fields["type"].default for member in members}


def test_changes_and_lifecycle_wait_long_queries_and_events_do_not() -> None:
    context = _context()
    short, long = DEFAULT_TIMEOUT_MS / 1000, LONG_TIMEOUT_MS / 1000
    every = _every_request_type()
    assert every >= MUTATING_TYPES | QUERY_TYPES
    for request_type in every:
        expected = short if request_type in QUERY_TYPES else long
        if request_type == "subscribe_events":
            expected = short  # the subscription only: events then come when they come
        assert context.timeout(request_type) == expected, request_type
    for lifecycle in ("upgrade_main", "soft_stop", "reload_configuration", "logging"):
        assert context.timeout(lifecycle) == long
    assert context.timeout() == short


def test_an_explicit_timeout_wins() -> None:
    assert _context().timeout("status") == DEFAULT_TIMEOUT_MS / 1000
    explicit = Context(
        argparse.Namespace(config=None, socket="/x.sock", timeout=250), Output(json_mode=True)
    )
    assert explicit.timeout("add_cluster") == 0.25
    unlimited = Context(
        argparse.Namespace(config=None, socket="/x.sock", timeout=0), Output(json_mode=True)
    )
    assert unlimited.timeout("status") is None

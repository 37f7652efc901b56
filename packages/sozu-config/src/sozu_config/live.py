"""Plans against a live proxy: read its state, apply a plan to it.

:mod:`sozu_config.plan` computes plans from states and does no I/O; this module is the other
half, shared by the library API and ``sozu-apply``:

* :func:`fetch_live_state` asks a daemon for its routing state and the version it has;
* :func:`apply_plan` sends a plan as one ``batch`` guarded by ``expected_version``: the daemon
  applies all of it or none, and refuses it when its state moved since the plan was made;
* :func:`load_plan` does both ends for a ``config.toml``: loads it, reads the live state of its
  ``command_socket`` and returns a :class:`LivePlan` that keeps the connection.

    from sozu_config import PlanError, load_plan

    with load_plan("config.toml") as plan:
        try:
            print(plan.apply().message)
        except PlanError as error:
            print("nothing was applied:", error.message)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import requests as rq
from .client import CommandClient
from .plan import Plan, PlanError, plan_states
from .responses import BatchResults, ErrorKind, Response, ResponseStatus, StateContent
from .state import ConfigState

__all__ = [
    "MUTATION_TIMEOUT",
    "LivePlan",
    "apply_plan",
    "fetch_live_state",
    "load_plan",
    "mutation_timeout",
]

MUTATION_TIMEOUT = 30.0
"""Seconds a client waits at least for the answer to a change: a batch is applied by every
worker before the daemon answers, which takes longer than a query."""


def mutation_timeout(ctl_command_timeout: int) -> float | None:
    """Seconds to wait for the answer to a change, given a ``ctl_command_timeout`` in
    milliseconds (0: no limit, ``None``): that timeout, but at least :data:`MUTATION_TIMEOUT`."""
    if ctl_command_timeout == 0:
        return None
    return max(ctl_command_timeout / 1000, MUTATION_TIMEOUT)


def fetch_live_state(client: CommandClient) -> ConfigState:
    """The daemon's routing state (no private keys), its ``version`` the daemon's.

    Raises :class:`~sozu_config.plan.PlanError` (with the answer) when the daemon does not give
    its state, :class:`~sozu_config.state.StateError` when the state it gives is inconsistent,
    and the client's errors when it cannot be reached.
    """
    response = client.send(rq.QueryState())
    content = response.content
    if not response.ok or not isinstance(content, StateContent):
        raise PlanError(
            f"the daemon did not give its state: {response.message or 'no state in the answer'}",
            response=response,
            kind=response.kind,
        )
    return ConfigState.from_snapshot(content.state, version=content.version)


def apply_plan(plan: Plan, client: CommandClient | None) -> Response:
    """Send ``plan`` as one batch guarded by its ``version`` and return the daemon's final
    answer (its content: the per-request :class:`~sozu_config.responses.BatchResults`).

    An empty plan sends nothing and returns an ``ok`` answer saying "nothing to do". Raises
    :class:`~sozu_config.plan.PlanError` when the daemon refuses the batch (then nothing was
    applied; ``kind`` says why, ``version_mismatch`` when the live state moved) or when there is
    no ``client``, and the client's errors (:class:`~sozu_config.client.DaemonUnreachable`,
    :class:`~sozu_config.client.CommandTimeout`) when the daemon cannot be reached.
    """
    if plan.empty:
        return Response(id="", status=ResponseStatus.OK, message="nothing to do")
    if client is None:
        raise PlanError(
            "this plan has no connection to a daemon: pass a CommandClient to apply(), "
            "or make the plan with load_plan()"
        )
    response = client.send(rq.Batch(requests=plan.requests, expected_version=plan.version))
    if response.ok:
        return response
    content = response.content
    raise PlanError(
        response.message,
        response=response,
        results=list(content.results) if isinstance(content, BatchResults) else [],
        kind=_failure_kind(response),
        index=response.index,
    )


def _failure_kind(response: Response) -> ErrorKind | None:
    if response.kind is not None:
        return response.kind
    # A daemon that predates error kinds tells a guarded batch refused for its version only in
    # the words of the state's refusal ("... (expected version N, now M) ...").
    if "expected version" in response.message:
        return ErrorKind.VERSION_MISMATCH
    return None


@dataclass
class LivePlan(Plan):
    """A plan made against a daemon, with the connection it was read from: :meth:`apply`
    uses it by default. Close it (``plan.close()``, or use the plan in a ``with`` block)."""

    client: CommandClient | None = field(default=None, repr=False, compare=False)

    def apply(self, client: CommandClient | None = None) -> Response:
        """:func:`apply_plan` on ``client``, by default the connection the plan was read from."""
        return apply_plan(self, client if client is not None else self.client)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def __enter__(self) -> LivePlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_plan(file: str | os.PathLike[str], client: CommandClient | None = None) -> LivePlan:
    """Load the desired state from a ``config.toml``, ask the daemon for its live state and
    return the plan between them.

    ``client`` defaults to a new :class:`~sozu_config.client.CommandClient` on the file's
    ``command_socket`` (waiting :func:`mutation_timeout` of its ``ctl_command_timeout``); the
    plan keeps it for :meth:`LivePlan.apply`, and the caller closes it (``plan.close()``).
    Raises :class:`~sozu_config.config.ConfigError` for a bad file, the client's errors when
    the daemon cannot be reached, and :class:`~sozu_config.plan.PlanError` when it does not
    give its state.
    """
    from .config import load_config

    config = load_config(file)
    if client is None:
        client = CommandClient(
            config.command_socket, timeout=mutation_timeout(config.ctl_command_timeout)
        )
    live = fetch_live_state(client)
    plan = plan_states(live, config.state, live.version)
    return LivePlan(
        desired=plan.desired,
        live=plan.live,
        version=plan.version,
        requests=plan.requests,
        changes=plan.changes,
        client=client,
    )

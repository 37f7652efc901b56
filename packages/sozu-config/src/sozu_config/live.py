"""Plans against a live proxy: read its state, apply a plan to it.

:mod:`sozu_config.plan` computes plans from states and does no I/O; this module is the other
half, shared by the library API and ``sozu-apply``:

* :func:`fetch_live_state` asks a daemon for its routing state and the version it has;
* :func:`load_plan` loads a ``config.toml``, reads the live state of its ``command_socket``
  and returns a :class:`LivePlan`, which keeps the connection for
  :meth:`LivePlan.apply`;
* :func:`mutation_timeout` is how long a client waits for the answer to a change (defined
  with the client, :mod:`sozu_config.client`, and exported here too).

Applying a plan is :meth:`Plan.apply <sozu_config.plan.Plan.apply>` with a client: the plan
builds the guarded batch and reads the answer, the client carries them.

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
from .client import MUTATION_TIMEOUT, CommandClient, mutation_timeout
from .plan import Plan, PlanError, Sender, plan_states
from .responses import Response, StateContent
from .state import ConfigState

__all__ = [
    "MUTATION_TIMEOUT",
    "LivePlan",
    "fetch_live_state",
    "load_plan",
    "mutation_timeout",
]


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


@dataclass
class LivePlan(Plan):
    """A plan made against a daemon, with the connection it was read from: :meth:`apply`
    uses it by default. Close it (``plan.close()``, or use the plan in a ``with`` block)."""

    client: CommandClient | None = field(default=None, repr=False, compare=False)

    def apply(self, client: Sender | None = None) -> Response:
        """:meth:`Plan.apply <sozu_config.plan.Plan.apply>` with ``client``, by default the
        connection the plan was read from."""
        return super().apply(client if client is not None else self.client)

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
    plan keeps it for :meth:`LivePlan.apply`, and the caller closes it (``plan.close()``); when
    no plan is returned, a connection opened here is closed.
    Raises :class:`~sozu_config.config.ConfigError` for a bad file, the client's errors when
    the daemon cannot be reached, and :class:`~sozu_config.plan.PlanError` when it does not
    give its state.
    """
    from .config import load_config

    config = load_config(file)
    own = client is None
    if client is None:
        client = CommandClient(
            config.command_socket, timeout=mutation_timeout(config.ctl_command_timeout)
        )
    try:
        live = fetch_live_state(client)
        plan = plan_states(live, config.state)
    except BaseException:
        if own:  # nobody else can close the connection opened here
            client.close()
        raise
    return LivePlan(
        desired=plan.desired,
        live=plan.live,
        version=plan.version,
        requests=plan.requests,
        changes=plan.changes,
        client=client,
    )

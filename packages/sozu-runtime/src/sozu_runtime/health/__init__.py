"""Backend health, decided once in the main process for every worker: the shared state
(:mod:`.board`), the active checks (:mod:`.probes`) and the monitor that runs them, takes the
workers' reports of real traffic and tells the workers (:mod:`.monitor`)."""

from .board import PASSIVE_FAILURES, HealthBoard
from .monitor import HealthMonitor

__all__ = ["PASSIVE_FAILURES", "HealthBoard", "HealthMonitor"]

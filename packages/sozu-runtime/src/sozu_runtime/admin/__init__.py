"""The read-only HTTP admin endpoint of the main process: Prometheus metrics, health, and JSON
views of the workers, the routing state and the clusters (``[admin]`` in the configuration).

:mod:`.server` serves it (aiohttp), :mod:`.source` is what it asks of the main process,
:mod:`.prometheus` renders metric snapshots for Prometheus, :mod:`.api` builds the JSON views.
"""

from .server import AdminListenError, AdminServer
from .source import MainProcess

__all__ = ["AdminListenError", "AdminServer", "MainProcess"]

"""The sozu daemon: main process and workers."""

from .compiled import install as _install_compiled_mode

__version__ = "0.1.0"

# before any worker module is imported: choose its compiled or pure-Python form
_install_compiled_mode()

"""The sozu daemon: main process and workers."""

__version__ = "0.1.0"

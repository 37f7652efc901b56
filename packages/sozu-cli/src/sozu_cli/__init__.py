"""The sozu and sozu-apply commands."""

__version__ = "0.1.0"

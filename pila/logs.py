"""The project's log output: one handler on the ``pila`` logger that writes to ``sys.stderr``.

The handler looks ``sys.stderr`` up at every record instead of binding the stream it was
created with, so a command run after its caller swapped the stream (pytest's capture, a
notebook) never writes to a closed file.
"""

from __future__ import annotations

import logging
import sys


class StderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stderr`` is when it emits."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(level: int = logging.INFO, fmt: str = "%(message)s") -> logging.Logger:
    """Give the ``pila`` logger a :class:`StderrHandler` (once) at ``level``; returns the logger."""
    logger = logging.getLogger("pila")
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter(fmt))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger

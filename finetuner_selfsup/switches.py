"""Environment switches that turn one of the engine's automatic speed-ups off.

A switch is off when its variable is ``0``, ``false``, ``no`` or ``off`` (any case); unset
or anything else leaves the feature on. Read on every call, so tests and users can change
it within a process.
"""
from __future__ import annotations

import os

_OFF = ("0", "false", "no", "off")


def switched_off(variable: str) -> bool:
    """Whether the environment variable ``variable`` turns its feature off."""
    return os.environ.get(variable, "").strip().lower() in _OFF

"""Every error the library raises on purpose, in one place.

Each message starts with the offending key (``optimizers.adam.lr: ...``) or says in one line what is wrong
and what to do, so a user can act on it without reading a traceback.
"""
from __future__ import annotations


class SpecError(ValueError):
    """A run, stream or config value is invalid. The message starts with the offending key."""


class ConfigError(SpecError):
    """A workflow config value is invalid; the message starts with the key path, e.g.
    ``experiments.table1.seeds[1]``. Raised before any job runs."""


class DatasetError(RuntimeError):
    """A dataset cannot be loaded. The message is one line: what is wrong and what to do about it."""

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


class CorruptFileError(RuntimeError):
    """A file the library wrote (a model, an optimiser or resume state, a prepared dataset, a split) cannot
    be used: it is truncated or unreadable, its checksum does not match its contents, it is not in the
    library's file format, or it holds pickled objects that loading would have to run code for. The
    message names the file, what is wrong and what to do (``fix``); nothing in the file was executed."""

    def __init__(self, path, reason: str, fix: str):
        self.path, self.reason, self.fix = str(path), reason, fix
        super().__init__(f"{path}: {reason}. {fix}")

    def __reduce__(self):  # picklable as raised, e.g. across a process pool
        return type(self), (self.path, self.reason, self.fix)

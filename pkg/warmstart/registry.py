"""Named registries: datasets, models, optimisers, init strategies, loss terms, probes, policies, reports
and experiment kinds are each looked up by name in one ``Registry``, the only list of their names.

A registry imports nothing heavy, so code that only checks names (the config check, the planner) can
use it; the entries themselves live beside their implementations.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from .errors import SpecError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # "model", "init strategy", ...: used in error messages
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def lookup(self, name: str, key: str) -> T:
        """The entry called ``name``; a SpecError naming ``key`` and the known names otherwise."""
        if name not in self._entries:
            raise SpecError(f"{key}: unknown {self.kind} {name!r}; known: {sorted(self._entries)}")
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self.lookup(name, self.kind)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self):
        return self._entries.items()


def check_options(fn: Callable, options: Mapping[str, Any], key: str, skip: int = 1,
                  choices: Mapping[str, tuple] | None = None) -> None:
    """Check ``options`` against the keyword parameters of ``fn`` (after its first ``skip`` positional
    ones): unknown and missing options raise a SpecError naming ``key`` and the allowed names. An option
    listed in ``choices`` must be one of its values (or, given as a list, a list of them)."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    allowed = {p.name for p in params}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SpecError(f"{key}: unknown option(s) {unknown}; allowed: {sorted(allowed) or 'none'}")
    missing = sorted(p.name for p in params if p.default is p.empty and p.name not in options)
    if missing:
        raise SpecError(f"{key}: missing option(s) {missing}")
    for name, allowed in (choices or {}).items():
        if name in options:
            values = options[name] if isinstance(options[name], (list, tuple)) else [options[name]]
            bad = [v for v in values if v not in allowed]
            if bad:
                raise SpecError(f"{key}.{name}: must be one of {list(allowed)}, got {options[name]!r}")

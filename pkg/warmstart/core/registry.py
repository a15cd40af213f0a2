"""Named registries: datasets, models, optimisers, init strategies, loss terms, probes, policies, reports
and experiment kinds are each looked up by name in one ``Registry``, the only list of their names.

A registry imports nothing heavy, so code that only checks names (the config check, the planner) can
use it; the entries themselves live beside their implementations.

``Registry.check`` is the one way an entry's options are checked, for every registry that takes options:
against the keyword parameters of the function the entry registers (``check_options``: names, and types
where annotated), before any job runs and again where a job uses them.
"""
from __future__ import annotations

import ast
import inspect
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from warmstart.core.errors import SpecError

T = TypeVar("T")

# Every registry by its kind ("init strategy", "optimizer", ...), the first made of each kind: how the layer
# below the components (a run's identity, ``core.identity``) reads an entry's revision without importing
# the component that registers it.
_BY_KIND: dict[str, "Registry"] = {}


class Registry(Generic[T]):
    def __init__(self, kind: str, check: Callable[[T, Mapping[str, Any], str], None] | None = None):
        """``check(entry, options, key)`` checks an entry's options (SpecError naming ``key``); by default
        the entry's own ``check(options, key)`` method. ``takes_options`` makes one for plain functions."""
        self.kind = kind  # "model", "init strategy", ...: used in error messages
        self._entries: dict[str, T] = {}
        self._revisions: dict[str, int] = {}
        self._check = check or (lambda entry, options, key: entry.check(options, key))
        _BY_KIND.setdefault(kind, self)

    def add(self, name: str, entry: T, revision: int = 1) -> T:
        """``revision``: raised by one whenever what the entry computes changes for the same options (a
        corrected formula, a new default), so the runs that use it get new identities (``core.identity``) and
        results made by the earlier code are never taken for the new one's."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        self._revisions[name] = revision
        return entry

    def revision(self, name: str) -> int:
        """The entry's revision (1 for an unknown name: identities never fail on a name)."""
        return self._revisions.get(name, 1)

    def lookup(self, name: str, key: str) -> T:
        """The entry called ``name``; a SpecError naming ``key`` and the known names otherwise."""
        if name not in self._entries:
            raise SpecError(f"{key}: unknown {self.kind} {name!r}; known: {sorted(self._entries)}")
        return self._entries[name]

    def check(self, name: str, options: Mapping[str, Any], key: str, name_key: str | None = None) -> T:
        """The entry called ``name`` (unknown: a SpecError naming ``name_key``, default ``key``), after
        checking ``options`` against it (a SpecError naming ``key``, the bad option and the allowed ones)."""
        entry = self.lookup(name, name_key or key)
        self._check(entry, options, key)
        return entry

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


def registry_of(kind: str) -> Registry:
    """The registry of ``kind``; a LookupError while none exists (the module that makes it is not imported)."""
    if kind not in _BY_KIND:
        raise LookupError(f"no {kind} registry is loaded")
    return _BY_KIND[kind]


def takes_options(skip: int) -> Callable[[Callable, Mapping[str, Any], str], None]:
    """The ``check`` of a registry whose entries are plain functions: their options are the keyword
    parameters after the first ``skip`` (e.g. a dataset loader's ``root`` and ``download``)."""
    return lambda fn, options, key: check_options(fn, options, key, skip)


def check_options(fn: Callable, options: Mapping[str, Any], key: str, skip: int = 1,
                  choices: Mapping[str, tuple] | None = None) -> None:
    """Check ``options`` against the keyword parameters of ``fn`` (a function or a class, after its first
    ``skip`` positional parameters): unknown and missing options raise a SpecError naming ``key`` and the
    allowed names, and a value of the wrong type (for a parameter annotated with a simple type, see
    ``_value_test``) one naming ``key.option`` and the type. An option listed in ``choices`` must be one
    of its values (or, given as a list, a list of them)."""
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
    for p in params:
        if p.name in options:
            _check_type(p, options[p.name], f"{key}.{p.name}")
    for name, allowed in (choices or {}).items():
        if name in options:
            values = options[name] if isinstance(options[name], (list, tuple)) else [options[name]]
            bad = [v for v in values if v not in allowed]
            if bad:
                raise SpecError(f"{key}.{name}: must be one of {list(allowed)}, got {options[name]!r}")


def _check_type(param: inspect.Parameter, value: Any, key: str) -> None:
    annotation = param.annotation
    if annotation is param.empty:
        return
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    test = _value_test(text)
    if test is None or test(value):
        return
    hint = ""
    if isinstance(value, str) and test(_as_number(value)):
        hint = " (YAML reads a number such as 1e-3 as a string: write it as 1.0e-3)"
    raise SpecError(f"{key}: must be {text}, got {value!r}{hint}")


def _as_number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_sequence(v: Any) -> bool:
    return isinstance(v, (list, tuple))


# The names a simple annotation may use, as tests of a config value: an int is a float, a bool is no int,
# and YAML's lists stand for lists and tuples alike.
_SIMPLE: dict[str, Callable[[Any], bool]] = {
    "int": _is_int, "float": _is_number, "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
    "list": _is_sequence, "tuple": _is_sequence, "dict": lambda v: isinstance(v, Mapping),
    "Any": lambda v: True, "object": lambda v: True,
}


def _value_test(annotation: str) -> Callable[[Any], bool] | None:
    """A test of a config value against ``annotation``, read (never evaluated) from its text: the names in
    ``_SIMPLE``, ``None``, ``X | Y``, ``list[X]``, ``tuple[X, ...]`` and ``tuple[X, Y]``. None for any
    other annotation (e.g. ``torch.Tensor``): such a value is not checked."""
    try:
        return _node_test(ast.parse(annotation, mode="eval").body)
    except (SyntaxError, ValueError):
        return None


def _node_test(node: ast.AST) -> Callable[[Any], bool]:
    if isinstance(node, ast.Constant) and node.value is None:
        return lambda v: v is None
    if isinstance(node, ast.Name) and node.id in _SIMPLE:
        return _SIMPLE[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _node_test(node.left), _node_test(node.right)
        return lambda v: left(v) or right(v)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in ("list", "tuple"):
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if node.value.id == "list" or (len(args) == 2 and isinstance(args[1], ast.Constant)
                                       and args[1].value is Ellipsis):
            item = _node_test(args[0])
            return lambda v: _is_sequence(v) and all(item(x) for x in v)
        items = [_node_test(a) for a in args]
        return lambda v: _is_sequence(v) and len(v) == len(items) and all(t(x) for t, x in zip(items, v))
    raise ValueError(f"not a simple annotation: {ast.dump(node)}")

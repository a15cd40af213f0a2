"""What a plain field of a spec may hold (the stop rule's, the engine's), written once: checked in Python
where a spec is built (a SpecError naming the key) and written as JSON schema for the config's schema
(``warmstart.plan.config_schema``), so that the schema and the spec can never disagree.

Python holds the truth, not the schema file: a spec is also built, and so checked, where no schema is
read (a run's spec.json read back by a training job).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from warmstart.core.errors import SpecError


def require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise SpecError(f"{key}: {message}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class OneOf:
    values: tuple[str, ...]

    def holds(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return " or ".join(repr(v) for v in self.values)

    def json_schema(self) -> dict:
        return {"enum": list(self.values)}


@dataclass(frozen=True)
class Fraction:
    """A number in (0, 1]."""

    def holds(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1

    def describe(self) -> str:
        return "in (0, 1]"

    def json_schema(self) -> dict:
        return {"type": "number", "exclusiveMinimum": 0, "maximum": 1}


@dataclass(frozen=True)
class PositiveInt:
    nullable: bool = False  # None allowed too

    def holds(self, value: Any) -> bool:
        return (self.nullable and value is None) or (is_int(value) and value >= 1)

    def describe(self) -> str:
        return "a positive integer" + (" or null" if self.nullable else "")

    def json_schema(self) -> dict:
        return {"type": ["integer", "null"] if self.nullable else "integer", "minimum": 1}


@dataclass(frozen=True)
class Boolean:
    def holds(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "true or false"

    def json_schema(self) -> dict:
        return {"type": "boolean"}


def check_fields(obj: Any, rules: Mapping[str, Any], key: str) -> None:
    """Each field of ``obj`` named in ``rules`` holds its rule; a SpecError naming ``key.field`` otherwise."""
    for name, rule in rules.items():
        value = getattr(obj, name)
        if not rule.holds(value):
            raise SpecError(f"{key}.{name}: must be {rule.describe()}, got {value!r}")


def object_schema(rules: Mapping[str, Any]) -> dict:
    """The JSON schema of a config section holding these fields (each optional, no other key)."""
    return {"type": "object", "additionalProperties": False,
            "properties": {name: rule.json_schema() for name, rule in rules.items()}}

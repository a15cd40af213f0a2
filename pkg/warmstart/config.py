"""Checking a workflow config against its JSON schema, with one readable line per problem."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from .experiments import ConfigError


def key_path(parts) -> str:
    """['experiments', 'table1', 'seeds', 0] -> 'experiments.table1.seeds[0]'"""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def check_config(config: Mapping[str, Any], schema_path: str | Path) -> None:
    """Raise ConfigError naming the offending key of the most relevant schema violation, if any."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = list(Draft202012Validator(schema).iter_errors(config))
    if errors:
        error = best_match(errors)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{key_path(error.absolute_path)}: {error.message}{more}")

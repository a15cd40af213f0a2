"""Checking a workflow config against its JSON schema, with one readable line per problem.

The schema file describes the config's structure; each experiment is then checked against the schema of
its kind, which the kind registers beside its planner (``warmstart.experiments.experiment_kind``). Names
that refer to a registry (datasets, models, optimisers, init strategies, terms, probes, policies, reports,
kinds) are not enumerated in any schema: the planner checks them against the registries.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from .errors import ConfigError


def key_path(parts) -> str:
    """['experiments', 'table1', 'seeds', 0] -> 'experiments.table1.seeds[0]'"""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _raise_first(errors: list, prefix: tuple = ()) -> None:
    if errors:
        error = best_match(errors)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{key_path(prefix + tuple(error.absolute_path))}: {error.message}{more}")


def check_config(config: Mapping[str, Any], schema_path: str | Path) -> None:
    """Raise ConfigError naming the offending key of the most relevant schema violation, if any."""
    from .experiments import EXPERIMENT_KINDS

    schema = yaml.safe_load(Path(schema_path).read_text())
    _raise_first(list(Draft202012Validator(schema).iter_errors(config)))
    for name, exp in (config.get("experiments") or {}).items():
        kind = exp.get("kind")
        if kind not in EXPERIMENT_KINDS:
            raise ConfigError(f"experiments.{name}.kind: unknown experiment kind {kind!r}; "
                              f"known: {sorted(EXPERIMENT_KINDS)}")
        kind_schema = EXPERIMENT_KINDS[kind].schema
        _raise_first(list(Draft202012Validator(kind_schema).iter_errors(exp)), ("experiments", name))

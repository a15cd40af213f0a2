"""Checking a workflow config, in one place: ``build_plan`` is the one entry point (the Snakefile calls it
once). It checks the config against its JSON schema, filling in the schema's defaults (``check_config``),
then plans it, which checks everything else: every label defined, every name known to its registry, every
option fitting its entry (``plan.config_labels``). Each problem is a ConfigError of one line that names
the offending key (and, for a bad name or option, the allowed ones).

The schema is the file's (workflow/schemas/config.schema.yaml) with the parts Python defines written in
(``plan.config_schema``); each experiment is then checked against the schema of its kind, which the kind
registers beside its planner (``plan.experiment_kinds``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, MutableMapping

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import best_match

from warmstart.core.errors import ConfigError
from warmstart.plan.config_schema import config_schema
from warmstart.plan.experiment_kinds import EXPERIMENT_KINDS
from warmstart.plan.experiments import plan_experiments
from warmstart.plan.planned import Plan


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


def _filling_defaults(validator_class):
    """``validator_class`` that also sets each missing property that has a ``default`` (the recipe of
    jsonschema's FAQ, as snakemake.utils.validate applies it)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        for name, subschema in properties.items():
            if "default" in subschema and isinstance(instance, dict):
                instance.setdefault(name, subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def check_config(config: MutableMapping[str, Any], schema_path: str | Path) -> None:
    """Raise ConfigError naming the offending key of the most relevant schema violation, if any; then fill
    in the schema's defaults (in ``config``) and check each experiment against its kind's schema."""
    schema = config_schema(schema_path)
    _raise_first(list(Draft202012Validator(schema).iter_errors(config)))
    for name, exp in (config.get("experiments") or {}).items():
        kind = exp.get("kind")
        if kind not in EXPERIMENT_KINDS:
            raise ConfigError(f"experiments.{name}.kind: unknown experiment kind {kind!r}; "
                              f"known: {sorted(EXPERIMENT_KINDS)}")
        _raise_first(list(Draft202012Validator(EXPERIMENT_KINDS[kind].schema).iter_errors(exp)), ("experiments", name))
    for error in _filling_defaults(Draft202012Validator)(schema).iter_errors(config):
        raise ConfigError(f"{key_path(error.absolute_path)}: {error.message}")  # a default the schema refuses


def build_plan(config: MutableMapping[str, Any], schema_path: str | Path, only: list[str] | None = None) -> Plan:
    """The checked config's plan: ``check_config`` (which fills in the defaults), then ``plan_experiments``
    (which checks every label, name and option)."""
    check_config(config, schema_path)
    return plan_experiments(config, only)


"""The config's JSON schema: the file (workflow/schemas/config.schema.yaml) gives the config's structure,
and the parts that Python defines are written in from Python when the schema is read, so that the
schema and the planner read one definition: the stop rule's and the engine's fields
(``core.spec_parts.STOP_RULES``, ``ENGINE_RULES``, which also check every spec built, e.g. one read back
from a run's spec.json, where no schema is read). The settings every experiment kind takes
(``COMMON_SETTINGS``) are here too; each kind adds its own (``plan.experiment_kinds``).

Names that refer to a registry (datasets, models, optimisers, init strategies, terms, probes, policies,
reports, kinds) and their options are not in any schema: the planner checks them against the registries.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from warmstart.core.field_rules import object_schema
from warmstart.core.spec_parts import ENGINE_RULES, STOP_RULES

STOP = object_schema(STOP_RULES)
ENGINE = object_schema(ENGINE_RULES)
# the $defs of the schema file that Python writes in (the file names them in its $ref's only)
PYTHON_DEFS = {"stop": STOP, "engine": ENGINE}

LABELS = {"type": "array", "minItems": 1, "uniqueItems": True,
          "items": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}}
FRACTION_OPEN = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
SEEDS = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "integer", "minimum": 0}}
# label -> {option: [values]}: a grid of settings, written once
GRID = {"type": "object", "additionalProperties": {"type": "object", "minProperties": 1,
                                                   "additionalProperties": {"type": "array", "minItems": 1}}}

# Settings every kind takes (its schema adds its own); registry names are checked by the planner.
COMMON_SETTINGS = {
    "kind": {"type": "string"},
    "report": {"type": "string", "description": "an entry of warmstart.reports.REPORTS"},
    "models": LABELS, "optimizers": LABELS,
    "seeds": SEEDS,
    "inits": {**LABELS, "description": "labels under 'inits:'; default: defaults.inits"},
    "terms": {"type": "array", "uniqueItems": True, "items": LABELS["items"],
              "description": "labels under 'terms:', added to the loss of every run of the experiment"},
    "probes": {"type": "array", "uniqueItems": True, "items": LABELS["items"],
               "description": "labels under 'probes:', measured after every epoch of every run"},
    "validation_fraction": FRACTION_OPEN,
    "batch_size": {"type": "integer", "minimum": 1},
    "stop": STOP,
    "engine": ENGINE,
}
COMMON_REQUIRED = ("kind", "report", "models", "optimizers", "seeds")


def kind_schema(required: tuple[str, ...], properties: Mapping[str, Any] | None) -> dict:
    """The JSON schema of one experiment of a kind: COMMON_SETTINGS and the kind's own ``properties``."""
    return {"type": "object", "additionalProperties": False, "required": [*COMMON_REQUIRED, *required],
            "properties": {**COMMON_SETTINGS, **(properties or {})}}


def config_schema(path: str | Path) -> dict:
    """The schema file at ``path``, with the definitions Python owns (``PYTHON_DEFS``) written in."""
    # libyaml's loader where PyYAML has it: the same document in a sixth of the pure-Python parser's
    # time (3 ms against 19 ms on the development machine), which every Snakemake invocation pays
    schema = yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schema.setdefault("$defs", {}).update(PYTHON_DEFS)
    return schema

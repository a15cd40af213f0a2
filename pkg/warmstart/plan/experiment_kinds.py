"""The experiment kinds: each turns one experiment's settings into planned runs (or streams), and says
which parquet tables the experiment writes and the JSON schema of its settings.

A kind is registered beside its planner (``@experiment_kind``): the paper's in ``plan.paper_kinds``, the
remedies' comparison in ``plan.remedies_kind``. ``plan.experiments`` imports both, so that looking a kind
up finds every one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from warmstart.core.registry import Registry
from warmstart.plan.config_schema import kind_schema

RUN_TABLES = ("summary", "epochs")
STREAM_TABLES = ("rounds",)


@dataclass(frozen=True)
class ExperimentKind:
    name: str
    plan: Callable[..., None]  # plan(plan: Plan, name, exp, config): adds the experiment's runs to the plan
    tables: tuple[str, ...]  # the experiment's parquet tables: of RUN_TABLES and STREAM_TABLES
    schema: dict  # JSON schema of an experiment of this kind (its own settings beside COMMON_SETTINGS)


EXPERIMENT_KINDS: Registry[ExperimentKind] = Registry("experiment kind")


def experiment_kind(name: str, *, tables: tuple[str, ...], required: tuple[str, ...] = (),
                    properties: Mapping[str, Any] | None = None):
    """Register ``plan(plan, name, exp, config)`` as experiment kind ``name``, with the JSON schema of
    its own settings (``properties``, ``required``) beside COMMON_SETTINGS."""
    def decorate(fn):
        EXPERIMENT_KINDS.add(name, ExperimentKind(name, fn, tables, kind_schema(required, properties)))
        return fn
    return decorate

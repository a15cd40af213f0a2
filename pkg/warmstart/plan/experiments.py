"""From config to runs: expand the experiments declared in a config into a Plan of validated specs.

The config names datasets, models, optimisers, init strategies, loss terms and probes once (``datasets:``,
``models:``, ``optimizers:``, ``inits:``, ``terms:``, ``probes:``), each under a label, and experiments
refer to them by label (``plan.config_labels`` resolves a label into a spec, its options checked against
its registry). Each experiment has a ``kind`` (``plan.experiment_kinds``; the paper's in
``plan.paper_kinds``, the remedies' comparison in ``plan.remedies_kind``) that turns its settings into
planned runs (or streams), and a ``report`` (``warmstart.reports.REPORTS``) that reads its tables.
``plan.job_blocks`` then groups the plan's runs into training jobs.
"""
from __future__ import annotations

from typing import Any, Mapping

from warmstart.core.errors import ConfigError
from warmstart.core.spec import ProbeSpec
from warmstart.plan import paper_kinds, remedies_kind  # noqa: F401  (they register the kinds)
from warmstart.plan.config_labels import as_config_error
from warmstart.plan.experiment_kinds import EXPERIMENT_KINDS
from warmstart.plan.planned import Plan
from warmstart.reports import REPORTS


def plan_experiments(config: Mapping[str, Any], only: list[str] | None = None) -> Plan:
    """Expand every experiment in ``config`` (or those named in ``only``) into a Plan."""
    plan = Plan()
    experiments = config.get("experiments") or {}
    for name, exp in experiments.items():
        if only is not None and name not in only:
            continue
        kind = as_config_error(EXPERIMENT_KINDS.lookup, exp.get("kind"), f"experiments.{name}.kind")
        report = as_config_error(REPORTS.lookup, exp.get("report"), f"experiments.{name}.report")
        if not set(report.tables) <= set(kind.tables):
            raise ConfigError(f"experiments.{name}.report: {exp.get('report')!r} reads the tables {list(report.tables)}, "
                              f"which a {kind.name!r} experiment does not write (it writes {list(kind.tables)})")
        plan.drawn_probes[name] = (tuple(ProbeSpec(p, {}) for p in report.probes), report.probed_phases)
        kind.plan(plan, name, exp, config)
        plan.experiment_config[name] = dict(exp)
        if not set(report.tables) & set(plan.tables(name)):
            raise ConfigError(f"experiments.{name}.report: {exp.get('report')!r} reads the tables "
                              f"{list(report.tables)}, none of which this experiment writes")
    return plan

"""What the registries say of a run spec before a job trains it: that every name in it exists and every
option fits its entry (``check_names``). The planner checks the same while it resolves a config's labels
(``plan.config_labels``); a job checks again, since its spec may come from a file. No torch here.
"""
from __future__ import annotations

from warmstart.core.errors import SpecError
from warmstart.core.spec import RunSpec
from warmstart.components.inits import STRATEGIES
from warmstart.components.interventions import INTERVENTIONS
from warmstart.components.models import MODELS
from warmstart.components.optimizers import OPTIMIZERS
from warmstart.components.probes import PROBES
from warmstart.components.terms import TERMS
from warmstart.plan.job_blocks import stackable


def check_names(spec: RunSpec, key: str = "") -> None:
    """Every registry name in ``spec`` exists, and every option fits its entry (SpecError otherwise)."""
    prefix = f"{key}." if key else ""
    MODELS.lookup(spec.model.arch, f"{prefix}model.arch")
    OPTIMIZERS.lookup(spec.optimizer.name, f"{prefix}optimizer.name").check(spec.optimizer, f"{prefix}optimizer")
    strategy = STRATEGIES.lookup(spec.init.strategy, f"{prefix}init.strategy")
    strategy.check(spec.init.options, f"{prefix}init.options")
    if strategy.needs_parent and spec.parent is None:
        raise SpecError(f"{prefix}init.strategy: {spec.init.strategy!r} needs a parent run to start from")
    for t in spec.terms:
        TERMS.lookup(t.name, f"{prefix}terms").check(t.options, f"{prefix}terms.{t.name}")
    for i in spec.interventions:
        INTERVENTIONS.lookup(i.name, f"{prefix}interventions").check(i.options, f"{prefix}interventions.{i.name}")
    for p in spec.probes:
        probe = PROBES.lookup(p.name, f"{prefix}probes")
        probe.check(p.options, f"{prefix}probes.{p.name}")
        if not probe.stackable and stackable(spec):
            raise SpecError(f"{prefix}probes.{p.name}: cannot measure a run of the stacked engine (model "
                            f"{spec.model.arch!r}, optimiser {spec.optimizer.name!r}); probe runs that train alone")

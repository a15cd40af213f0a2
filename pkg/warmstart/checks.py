"""What the registries say about a run spec: that every name in it exists and every option fits
(``check_names``, before a job trains), and whether its seeds can train as one stack (``stackable``,
when the planner forms the training jobs). No torch here: planning uses it.
"""
from __future__ import annotations

from .errors import SpecError
from .init import STRATEGIES
from .models import MODELS
from .optimizers import OPTIMIZERS
from .probes import PROBES
from .spec import RunSpec
from .terms import TERMS


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
    for p in spec.probes:
        PROBES.lookup(p.name, f"{prefix}probes").check(p.options, f"{prefix}probes.{p.name}")


def stackable(spec: RunSpec) -> bool:
    """Whether the seeds of ``spec``'s condition can train as one stack: a stackable model, an
    elementwise optimiser, no compilation, and only terms, probes and an init strategy that work per
    seed; runs that keep checkpoints train alone (they are saved from one model)."""
    return (MODELS[spec.model.arch].stackable and OPTIMIZERS[spec.optimizer.name].elementwise
            and not spec.engine.compile and STRATEGIES[spec.init.strategy].stackable(spec.init.options)
            and all(TERMS[t.name].stackable for t in spec.terms)
            and all(PROBES[p.name].stackable for p in spec.probes)
            and not spec.checkpoints)

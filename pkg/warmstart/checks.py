"""What the registries say about a run spec: that every name in it exists and every option fits
(``check_names``, before a job trains), and whether it trains on the stacked engine, so that its seeds
can share a job (``stackable``, when the planner forms the training jobs). No torch here: planning uses it.
"""
from __future__ import annotations

from .errors import SpecError
from .init import STRATEGIES
from .interventions import INTERVENTIONS
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
    for i in spec.interventions:
        INTERVENTIONS.lookup(i.name, f"{prefix}interventions").check(i.options, f"{prefix}interventions.{i.name}")
    for p in spec.probes:
        probe = PROBES.lookup(p.name, f"{prefix}probes")
        probe.check(p.options, f"{prefix}probes.{p.name}")
        if not probe.stackable and stackable(spec):
            raise SpecError(f"{prefix}probes.{p.name}: cannot measure a run of the stacked engine (model "
                            f"{spec.model.arch!r}, optimiser {spec.optimizer.name!r}); probe runs that train alone")


def stackable(spec: RunSpec) -> bool:
    """Whether ``spec`` trains on the stacked engine (its seeds as rows of ``[S, ...]`` tensors; a stack of
    one when it trains alone), so that the seeds of its condition can share a job: a stackable model, an
    elementwise (or per-row) optimiser, and an init strategy, terms and interventions that work per seed. Decided by what changes the
    run's numbers only, never by its probes, kept checkpoints or kept optimiser state (which other
    experiments may add or remove) nor by speed options: a run gets the same engine, and so the same
    bits, whichever experiments ask for it and however its seeds are grouped."""
    model = MODELS[spec.model.arch].stackable  # a bool, or (arch: python) a function of the model's options
    return ((model(spec.model.options) if callable(model) else model) and OPTIMIZERS[spec.optimizer.name].stackable
            and STRATEGIES[spec.init.strategy].stackable(spec.init.options)
            and all(TERMS[t.name].stackable for t in spec.terms)
            and all(INTERVENTIONS[i.name].stackable for i in spec.interventions))

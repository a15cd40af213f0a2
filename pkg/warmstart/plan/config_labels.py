"""From config labels to checked specs: every registry name and option a config gives, checked before
any job runs.

The config names datasets, models, optimisers, init strategies, loss terms, interventions and probes once, each under a
label (``models: {mlp: {hidden: 100}}``; the registry name defaults to the label), and experiments refer
to them by label. Resolving a label finds its entry and checks its options through the registry
(``Registry.check``: against the keyword parameters of the registered function, names and annotated
types), so a misspelt or mistyped option fails here, naming its key, the bad option and the allowed ones,
not in a training job's log. Selection policies take no options; an experiment's own settings are checked
by the JSON schema of its kind (``warmstart.plan.config_check``). Every error is a ConfigError, which
the Snakefile prints as one line.

Importing this module imports every component registry (none imports torch at module level): the planner
looks names up in them, and a run's identity reads its methods' revisions from them (``core.identity``).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Mapping

from warmstart.components.datasets import DATASETS, planned_options
from warmstart.components.inits import STRATEGIES
from warmstart.components.interventions import INTERVENTIONS
from warmstart.components.models import MODELS
from warmstart.components.optimizers import OPTIMIZERS
from warmstart.components.policies import POLICIES
from warmstart.components.probes import PROBES
from warmstart.components.terms import TERMS
from warmstart.core.errors import ConfigError, SpecError
from warmstart.core.registry import Registry
from warmstart.core.spec import DatasetSpec, InitSpec, InterventionSpec, ModelSpec, OptimizerSpec, ProbeSpec, TermSpec

# section (or experiment setting) naming registry entries -> (its registry, the entry field that names the
# registry entry: its label by default)
REGISTRIES: dict[str, tuple[Registry, str | None]] = {
    "datasets": (DATASETS, "name"),
    "models": (MODELS, "arch"),
    "optimizers": (OPTIMIZERS, "name"),
    "inits": (STRATEGIES, "strategy"),
    "terms": (TERMS, "term"),
    "interventions": (INTERVENTIONS, "intervention"),
    "probes": (PROBES, "probe"),
    "policies": (POLICIES, None),  # named in experiments only, with no options
}


def registry(section: str) -> Registry:
    return REGISTRIES[section][0]


def as_config_error(fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except TypeError as e:
        raise ConfigError(f"{kwargs.get('key', args[-1] if args else '')}: {e}") from None
    except SpecError as e:
        raise ConfigError(str(e)) from None


def checked(section: str, name: str, options: Mapping[str, Any], key: str, name_key: str | None = None):
    """The entry ``name`` of ``section``'s registry, its ``options`` checked against it; a ConfigError
    naming ``name_key`` (default ``key``) for an unknown name, ``key`` for a bad option."""
    return as_config_error(registry(section).check, name, options, key=key, name_key=name_key)


def labelled_entry(section: str, label: str, config: Mapping[str, Any], key: str, name_field: str) -> tuple[str, dict]:
    """(registry name, options) of the ``section`` entry ``label``; the name defaults to the label."""
    entries = config.get(section) or {}
    if label not in entries:
        raise ConfigError(f"{key}: unknown {section} label {label!r}; define it under '{section}:' "
                          f"(defined: {sorted(entries)})")
    options = dict(entries[label] or {})
    return options.pop(name_field, label), options


def resolved(section: str, label: str, config: Mapping[str, Any], key: str) -> tuple[str, dict]:
    """(registry name, options) of the entry ``label`` under ``section:`` (``key`` names where it is referred
    to), both checked: a bad name or option is a ConfigError naming ``section.label``."""
    name_field = REGISTRIES[section][1]
    name, options = labelled_entry(section, label, config, key, name_field)
    checked(section, name, options, f"{section}.{label}", f"{section}.{label}.{name_field}")
    return name, options


def built(cls, settings: dict, key: str):
    """``cls(**settings)``, validated; a bad field becomes a ConfigError naming ``key``."""
    try:
        spec = cls(**settings)
        spec.validate(key)
    except TypeError as e:
        raise ConfigError(f"{key}: {e}") from None
    except SpecError as e:
        raise ConfigError(str(e)) from None
    return spec


def dataset_spec(label: str, config, key: str) -> DatasetSpec:
    """A dataset read from the user's files also carries a fingerprint of them (``datasets.planned_options``)."""
    name, options = resolved("datasets", label, config, key)
    return DatasetSpec(name, as_config_error(planned_options, name, options, f"datasets.{label}"))


def model_spec(label: str, config, key: str) -> ModelSpec:
    return ModelSpec(*resolved("models", label, config, key))


def optimizer_spec(label: str, config, key: str) -> OptimizerSpec:
    name, options = resolved("optimizers", label, config, key)
    return built(OptimizerSpec.from_settings, {"name": name, "settings": options}, f"optimizers.{label}")


def init_spec(label: str, config, key: str) -> InitSpec:
    return InitSpec(*resolved("inits", label, config, key))


def term_spec(label: str, config, key: str) -> TermSpec:
    return TermSpec(*resolved("terms", label, config, key))


def intervention_spec(label: str, config, key: str) -> InterventionSpec:
    return InterventionSpec(*resolved("interventions", label, config, key))


def probe_spec(label: str, config, key: str) -> ProbeSpec:
    return ProbeSpec(*resolved("probes", label, config, key))


def grid_entries(exp, config, key: str, grid_key: str, section: str, allow_empty: bool = False) -> list[tuple[str, str, dict]]:
    """``<grid_key>: {label: {option: [values]}}`` -> (label, condition name, registry name + options) per
    combination of values, each checked against the entry of ``section``'s registry; the grid is written
    once. With ``allow_empty``, ``{label: {}}`` is the entry as configured, one setting named by its label."""
    out = []
    for label, options in (exp.get(grid_key) or {}).items():
        name, base = labelled_entry(section, label, config, f"{key}.{grid_key}", REGISTRIES[section][1])
        if allow_empty and not options:
            checked(section, name, base, f"{key}.{grid_key}.{label}")
            out.append((label, label, {"name": name, "options": dict(base)}))
            continue
        if not isinstance(options, Mapping) or not options or not all(isinstance(v, list) and v for v in options.values()):
            raise ConfigError(f"{key}.{grid_key}.{label}: must map each option to a non-empty list of values")
        for values in itertools.product(*options.values()):
            chosen = dict(zip(options, values))
            condition = label + " " + " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in chosen.items())
            opts = {**base, **chosen}
            checked(section, name, opts, f"{key}.{grid_key}.{label}")
            out.append((label, condition, {"name": name, "options": opts}))
    return out

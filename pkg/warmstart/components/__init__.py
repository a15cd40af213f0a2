"""The components a run is made of, one registry each: datasets, models, init strategies, optimisers, loss
terms, interventions, probes and selection policies (and the splits).

This package imports every registry and every module that adds entries to one, so importing any
component makes every registry whole: the planner looks names up in them, and a run's identity reads
its methods' revisions from them (``warmstart.core.identity``). Some registries take entries from more
than one module: the datasets read from the user's files (``file_datasets``, ``table_dataset``) are
entries of ``datasets.DATASETS``, the models the user already has (``external_models``) of
``models.MODELS``, the remedies published since the paper (``remedy_inits``) of ``inits.STRATEGIES``.
Those modules import the registry they add to, so the registry's module cannot import them; this package
does. None of these modules imports torch at module level (planning must not pay its import).
"""
from warmstart.components import (datasets, external_models, file_datasets, inits, interventions,  # noqa: F401
                                  models, optimizers, policies, probes, remedy_inits, table_dataset, terms)

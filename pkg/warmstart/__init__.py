"""warmstart: reproduce and extend Ash & Adams, "On the Difficulty of Warm-Starting Neural Network Training".

The library holds all the science (datasets, splits, models, initialisation strategies, the training
engine, experiment planning, summaries and plots) and is usable without Snakemake; the workflow in
``workflow/`` only decides which runs exist and which files they read and write.

Importing any part of the library registers every component first (below): a run's identity names the
revisions of the methods it uses (``core.identity``), which their registries hold, and the spec (in
``core``, below the components) must find them whichever module was imported first. None of the
components imports torch at module level.
"""

__version__ = "0.1.0"

from warmstart.components import inits, interventions, optimizers, terms  # noqa: E402,F401

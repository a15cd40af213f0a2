"""warmstart: reproduce and extend Ash & Adams, "On the Difficulty of Warm-Starting Neural Network Training".

The library holds all the science (datasets, splits, models, initialisation strategies, the training
engine, experiment planning, summaries and plots) and is usable without Snakemake; the workflow in
``workflow/`` only decides which runs exist and which files they read and write.
"""

__version__ = "0.1.0"

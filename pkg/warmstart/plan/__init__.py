"""Planning, which runs while the Snakefile is parsed and loads no torch: the config checked once, the
experiment kinds, the plan of runs and streams, their grouping into jobs, the plan's files (docs/layout.md)."""

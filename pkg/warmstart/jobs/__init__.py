"""What a workflow job does, from files to files: train a block of runs or an online stream, write each
run's files, summarise finished runs into tables (docs/layout.md)."""

"""What every layer shares: the typed spec and its identity, the registry mechanism, errors, file I/O and
the seeds a run derives (docs/layout.md)."""

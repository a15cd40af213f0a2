"""Send a script's stdout and stderr to the rule's log file, so every job leaves a readable record."""
import sys


def redirect_to_log(snakemake):
    if snakemake.log:
        handle = open(snakemake.log[0], "w", buffering=1)
        sys.stdout = sys.stderr = handle

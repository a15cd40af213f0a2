import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.core.io import save_parquet  # noqa: E402
from warmstart.jobs.results import collect, load_planned  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
summary, epochs = collect(sm.wildcards.experiment, load_planned(sm.input[0]), sm.params.runs_dir)
save_parquet(summary, sm.output.summary)
save_parquet(epochs, sm.output.epochs)
print(f"{len(summary)} runs, {len(epochs)} epoch rows")

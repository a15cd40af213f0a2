import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.core.io import save_parquet  # noqa: E402
from warmstart.jobs.results import collect_streams, load_planned  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
rounds = collect_streams(sm.wildcards.experiment, load_planned(sm.input[0]), sm.params.streams_dir)
save_parquet(rounds, sm.output.rounds)
print(f"{rounds['stream_id'].nunique()} streams, {len(rounds)} rounds")

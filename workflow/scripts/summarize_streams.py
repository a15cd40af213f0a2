import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.experiments import PlannedRun  # noqa: E402
from warmstart.io import save_parquet  # noqa: E402
from warmstart.results import collect_streams  # noqa: E402
from warmstart.streams import StreamSpec  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
planned = [PlannedRun(StreamSpec.from_dict(p["spec"]), p["labels"]) for p in json.loads(sm.params.planned)]
rounds = collect_streams(sm.wildcards.experiment, planned, sm.params.streams_dir)
save_parquet(rounds, sm.output.rounds)
print(f"{rounds['stream_id'].nunique()} streams, {len(rounds)} rounds")

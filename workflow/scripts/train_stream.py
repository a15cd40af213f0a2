import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import claim_gpu, redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.plan.plan_files import read_stream_spec  # noqa: E402
from warmstart.jobs.train_streams import execute_stream  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
slot = claim_gpu(sm)  # held until the job ends
spec = read_stream_spec(sm.input.spec, sm.input.jobs, sm.wildcards.stream)
execute_stream(spec, sm.input.data, sm.input.split, Path(sm.output.rounds).parent, device=sm.config["device"],
               threads=sm.threads)

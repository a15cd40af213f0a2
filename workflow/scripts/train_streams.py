import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import claim_gpu, redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.plan.plan_files import read_stream_spec, reuse_published  # noqa: E402
from warmstart.jobs.train_streams import execute_streams  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
slot = claim_gpu(sm)  # held until the job ends
n = sum(1 for key in sm.input.keys() if key.startswith("spec"))
results = Path(sm.config["results_dir"])
execute_streams(
    [read_stream_spec(sm.input[f"spec{i}"], sm.input.jobs, Path(sm.input[f"spec{i}"]).stem) for i in range(n)],
    sm.input.data,
    [sm.input[f"split{i}"] for i in range(n)],
    Path(sm.output[0]),
    device=sm.config["device"],
    threads=sm.threads,
    state_dir=results / "resume" / "streams",
    published_dir=results / "streams" if reuse_published(sm.input.jobs) else None,
)

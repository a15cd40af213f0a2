import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import claim_gpu, redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.plan.plan_files import read_stream_spec  # noqa: E402
from warmstart.jobs.train_streams import execute_stream  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
slot = claim_gpu(sm)  # held until the job ends
out = Path(sm.output[0])
n = sum(1 for key in sm.input.keys() if key.startswith("spec"))
for i in range(n):
    spec = read_stream_spec(sm.input[f"spec{i}"], sm.input.jobs, Path(sm.input[f"spec{i}"]).stem)
    execute_stream(spec, sm.input.data, sm.input[f"split{i}"], out / spec.name, device=sm.config["device"],
                   threads=sm.threads,
                   state_path=Path(sm.config["results_dir"]) / "resume" / "streams" / f"{spec.name}.pt")

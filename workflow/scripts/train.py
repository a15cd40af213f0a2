import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import claim_gpu, redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.plan.plan_files import read_job_runs, reuse_published  # noqa: E402
from warmstart.jobs.train_runs import execute_block  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
slot = claim_gpu(sm)  # held until the job ends
out = Path(sm.output[0])
block = out.name
n = sum(1 for key in sm.input.keys() if key.startswith("split"))  # the block's runs: split0, split1, ...
specs = read_job_runs(sm.input.jobs, block, expected=n)  # in that order
execute_block(
    specs,
    data_path=sm.input.data,
    split_paths=[sm.input[f"split{i}"] for i in range(n)],
    out_dirs=[out / spec.name for spec in specs],
    parent_model_paths=[sm.input.get(f"parent{i}") for i in range(n)],
    parent_optimizer_paths=[sm.input.get(f"parent_optimizer{i}") for i in range(n)],
    device=sm.config["device"],
    threads=sm.threads,
    checkpoint_every_s=sm.config["checkpoint_every_s"],
    resume_dir=Path(sm.config["results_dir"]) / "resume",
    block=block,
    published_dir=Path(sm.config["results_dir"]) / "runs" if reuse_published(sm.input.jobs) else None,
)

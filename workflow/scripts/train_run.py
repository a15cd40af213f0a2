import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.runner import execute_run  # noqa: E402
from warmstart.spec import RunSpec  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
execute_run(
    RunSpec.from_json(sm.params.spec),
    data_path=sm.input.data,
    split_path=sm.input.split,
    parent_model_path=sm.input.get("parent"),
    out_dir=Path(sm.output.model).parent,
    device=sm.params.device,
    threads=sm.threads,
    checkpoint_every_s=sm.params.checkpoint_every_s,
)

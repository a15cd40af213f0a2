import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.multiseed import execute_runs_stacked  # noqa: E402
from warmstart.spec import RunSpec  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
specs = [RunSpec.from_dict(d) for d in json.loads(sm.params.specs)]
execute_runs_stacked(
    specs,
    data_path=sm.input.data,
    split_paths=[sm.input[f"split_s{s.seed}"] for s in specs],
    parent_model_paths=[sm.input.get(f"parent_s{s.seed}") for s in specs],
    out_dirs=[Path(path).parent for path in sm.output if path.endswith("model.pt")],  # in specs' order
    device=sm.params.device,
    threads=sm.threads,
)

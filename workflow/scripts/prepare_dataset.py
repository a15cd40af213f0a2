import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.components.datasets import prepare_dataset  # noqa: E402
from warmstart.core.errors import DatasetError  # noqa: E402
from warmstart.core.spec import DatasetSpec  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
spec = DatasetSpec(**json.loads(sm.params.spec))
try:
    prepare_dataset(spec, sm.config["data_dir"], sm.config["download"], sm.output[0])
except DatasetError as e:
    # one clear line (what is wrong, what to do) instead of a traceback
    sys.exit(f"error: {e}")

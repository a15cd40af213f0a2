import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.datasets import DatasetError, prepare_dataset  # noqa: E402
from warmstart.spec import DatasetSpec  # noqa: E402

redirect_to_log(snakemake)  # noqa: F821
spec = DatasetSpec(**json.loads(snakemake.params.spec))  # noqa: F821
try:
    prepare_dataset(spec, snakemake.params.data_dir, snakemake.params.download, snakemake.output[0])  # noqa: F821
except DatasetError as e:
    # one clear line (what is wrong, what to do) instead of a traceback
    sys.exit(f"error: {e}")

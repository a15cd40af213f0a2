import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

import pandas as pd  # noqa: E402

from warmstart.reports import REPORTS  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
report = REPORTS[sm.params.report]
# its tables in its order (None for a table the experiment does not write, e.g. a batch-only
# leaderboard's rounds), then its own files (the PNG beside the PDF is written with it)
tables = [pd.read_parquet(sm.input[t]) if t in sm.input.keys() else None for t in report.tables]
report.draw(*tables, *(sm.output[ext] for ext in report.outputs), title=report.title(sm.wildcards.experiment))

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

import pandas as pd  # noqa: E402

from warmstart.reports import REPORTS  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
report = REPORTS[sm.params.report]
# the report's own files, in its order (the PNG beside the PDF is written with it)
report.draw(*(pd.read_parquet(path) for path in sm.input), *(sm.output[ext] for ext in report.outputs),
            title=report.title(sm.wildcards.experiment))

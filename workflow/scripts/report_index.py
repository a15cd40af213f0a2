import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.core.io import atomic_path  # noqa: E402
from warmstart.reports.captions import front_page  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
out = Path(sm.output.html)
with atomic_path(out) as tmp:
    tmp.write_text(front_page(out.parent, sm.params.entries, sm.params.config_name))

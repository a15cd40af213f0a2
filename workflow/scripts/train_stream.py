import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.streams import StreamSpec, execute_stream  # noqa: E402

sm = snakemake  # noqa: F821
redirect_to_log(sm)
execute_stream(StreamSpec.from_dict(json.loads(sm.params.spec)), sm.input.data, sm.input.split,
               Path(sm.output.rounds).parent, device=sm.params.device, threads=sm.threads)

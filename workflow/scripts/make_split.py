import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _log import redirect_to_log  # noqa: E402  (also puts pkg/ on the path)

from warmstart.core.io import load_torch  # noqa: E402
from warmstart.components.splits import make_split, save_split  # noqa: E402

redirect_to_log(snakemake)  # noqa: F821
n_train = len(load_torch(snakemake.input[0], what="the prepared dataset")["y_train"])  # noqa: F821
split = make_split(n_train, snakemake.params.seed, snakemake.params.validation_fraction)  # noqa: F821
save_split(split, snakemake.output[0])  # noqa: F821
print(f"{n_train} samples: {len(split.validation)} validation, {len(split.pool)} pool")

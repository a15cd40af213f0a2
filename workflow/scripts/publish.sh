#!/usr/bin/env bash
# publish_run, publish_optimizer, publish_checkpoint (a Snakemake bash script: no Python start-up per run):
# give each output, in the order declared (a run's model.pt last), the content of the file at the same
# place under the training job's directory for this run, <job dir>/<run>/...: a hard link where the file
# system allows, else a copy, each through a temporary name and one rename, so that an output never
# exists half-written.
set -euo pipefail
exec >"${snakemake_log[0]}" 2>&1
run=${snakemake_wildcards[run]}
src="${snakemake_input[0]}/$run"
i=0
while [[ -v "snakemake_output[$i]" ]]; do
    target=${snakemake_output[$i]}
    relative=${target#*/runs/"$run"/}  # e.g. model.pt, checkpoints/epoch5.pt
    mkdir -p "$(dirname "$target")"
    tmp="$(dirname "$target")/.$(basename "$target").publish.$$"
    ln -f "$src/$relative" "$tmp" 2>/dev/null || cp -p "$src/$relative" "$tmp"
    mv -f "$tmp" "$target"
    echo "published $target from $src/$relative"
    i=$((i + 1))
done
[[ $i -gt 0 ]] || { echo "publish.sh: no outputs" >&2; exit 1; }

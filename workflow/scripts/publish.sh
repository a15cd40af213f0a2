# Publish a run's (or stream's) files from its training job's directory: publish.sh KIND NAME FROM OUTPUT...
# (KIND: runs or streams). Each output, in the order given (a run's model.pt last), gets the content of the
# file at the same place under FROM/NAME: a hard link where the file system allows, else a copy, each
# through a temporary name and one rename, so that an output never exists half-written.
set -euo pipefail
kind=$1 name=$2 from=$3
shift 3
for target in "$@"; do
    relative="${target#*/"$kind"/"$name"/}"
    tmp="$(dirname "$target")/.$(basename "$target").publish.$$"
    ln -f "$from/$name/$relative" "$tmp" 2>/dev/null || cp -p "$from/$name/$relative" "$tmp"
    mv -f "$tmp" "$target"
    echo "published $target from $from/$name/$relative"
done

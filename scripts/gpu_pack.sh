#!/usr/bin/env bash
# Build what scripts/gpu_session.sh carries to a GPU machine (both git-ignored through
# the repository's info/exclude): .pack/ holds ../shared/data/cifar10 as one xz tar (about 19 MB: the
# JPEGs share their headers, which xz finds) with a digest of every file's bytes, checked
# after unpacking there; .whl/ holds the CLI's pure-Python dependencies at the versions
# installed here (the machine's image has torch but maybe other typer/rich versions).
# SETS=sr packs the super-resolution images (scripts/gpu_sr.sh): .pack/sr.tar, the
# training and report images as lossless WebP (43.2 MiB; the same files as a tar of PNG and
# BMP would be 86 MB), with the digest of their decoded pixels (scripts/gpu_sr_files.py).
#
#   bash scripts/gpu_pack.sh      then the device tool: run "bash scripts/gpu_session.sh"
#                                 with carry [".pack", ".whl"]
set -eu
DATA=${DATA:-../shared/data}
PY=${PYTHON:-.venv/bin/python}
EXCLUDE=$(git rev-parse --git-path info/exclude)  # .git is a file in a worktree
mkdir -p "$(dirname "$EXCLUDE")"; touch "$EXCLUDE"
for d in /.pack/ /.whl/ /.gpu-deg/ /.gpu-sr/; do  # .gpu-*: runs brought back to resume
  grep -qxF "$d" "$EXCLUDE" || echo "$d" >> "$EXCLUDE"
done
mkdir -p .pack
for name in ${SETS:-cifar10}; do  # e.g. SETS="cifar10 sr"; the carry limit is 64 MiB
  if [ "$name" = sr ]; then
    PYTHONPATH=$PWD/src $PY scripts/gpu_sr_files.py pack "$DATA/sr" .pack
    continue
  fi
  (cd "$DATA" && tar cf - "$name" | xz -T2 -6) > ".pack/$name.tar.xz.tmp"
  mv ".pack/$name.tar.xz.tmp" ".pack/$name.tar.xz"
  (cd "$DATA" && find "$name" -type f | LC_ALL=C sort | xargs cat | sha256sum) > ".pack/$name.digest"
done
pins=()
for name in typer rich shellingham markdown-it-py mdurl pygments pydantic pydantic_core \
            annotated-types typing-inspection annotated-doc typing_extensions; do
  pins+=("$name==$($PY -m pip show "$name" | sed -n 's/^Version: //p')")
done
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
du -sh .pack .whl

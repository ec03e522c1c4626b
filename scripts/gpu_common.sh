# Shared steps of the GPU lease scripts (sourced): the clock, the machine report, the CLI's
# wheels, and unpacking the data carried in $PACK with a check against ../shared/data's
# digest. Expects OUT, PACK, PY, DEADLINE and DATA to be set by the caller.

left() { echo $(( DEADLINE - $(date +%s) )); }
step() { echo; echo "== $1 ($(left) s left) $(date -u +%T)"; }

machine_report() {
  # the CLI's own pure-Python dependencies at the versions tested here, carried as wheels
  # in .whl; the image's are used if these do not import
  if [ -z "${DRY:-}" ] && [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH
    $PY -c "import resnets.cli" || export PYTHONPATH=$PWD/src:$PWD
  fi
  $PY -c "import typer, rich; print('typer', typer.__version__, 'rich', rich.__file__)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
}

unpack() {  # unpack NAME (a folder of ../shared/data) from $PACK/NAME.tar.xz and check it
  local name=$1
  mkdir -p "$DATA"
  tar xJf "$PACK/$name.tar.xz" -C "$DATA" || return 1
  local got want
  got=$(cd "$DATA" && find "$name" -type f | LC_ALL=C sort | xargs cat | sha256sum)
  want=$(cat "$PACK/$name.digest")
  echo "$name digest here: $got"; echo "digest made from ../shared/data: $want"
  [ "$got" = "$want" ] || { echo "the unpacked $name differs from ../shared/data"; return 1; }
}

what_comes_back() {  # the files under $OUT against the device's limits: 8 files, 16 MiB
  # each, 2 folders down, plain names
  (cd "$OUT" && find . -type f -printf '%s %d %p\n' | sort -k3) | awk '
    { n++; total += $1; big = big || $1 > 16 * 2^20; deep = deep || $2 > 3
      odd = odd || $3 !~ /^[A-Za-z0-9._\/-]+$/; printf "%10d %s\n", $1, $3 }
    END { printf "%d files, %.1f MiB%s%s%s%s\n", n, total / 2^20,
          (n > 8 ? ": OVER 8 FILES" : ""), (big ? ", ONE OVER 16 MiB" : ""),
          (deep ? ", TOO DEEP" : ""), (odd ? ", ODD NAMES" : "") }'
}

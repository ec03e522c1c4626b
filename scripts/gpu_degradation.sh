#!/usr/bin/env bash
# Issue #16 on a lent GPU: the degradation experiment at the paper's schedule, one seed per
# command. plain-20, ResNet-20, plain-56 and ResNet-56 train at the same time on the one card
# (four processes, CUDA_VISIBLE_DEVICES=0 for each), under CUDA graphs, bf16 autocast as in
# the CPU runs, the full training set with the 10% validation split (45,000 images).
#
#   1. report the machine and unpack the CIFAR-10 JPEG tree from $PACK, checked byte for byte
#      against the digest of ../shared/data (scripts/gpu_common.sh); decode it once into the
#      uint8 cache so that the four runs do not all decode it;
#   2. resume: run folders brought back by an earlier lease, put under $RESUME (default
#      .gpu-deg, git-ignored) as degradation-seed$SEED/<net>-seed$SEED/, are copied in and
#      continue from their last.pt (finished ones, with degradation.json, are skipped);
#   3. the four runs, each `resnets experiment degradation --only <net>` with its own log,
#      bounded by `timeout`: SIGTERM at the deadline. The trainer writes last.pt atomically
#      after every epoch and its SIGTERM handler only releases the run's lock, so a stopped
#      run loses the epoch in progress (a few seconds here) and resumes from the one before.
#      A run that fails before its first checkpoint (e.g. torch.compile fails on this image)
#      is started again once in eager mode;
#   4. copy back: the device returns at most 8 files of at most 16 MiB, so the run folders
#      (config, metrics, signal_init.json, degradation.json, result.json, curves;
#      model.safetensors when finished, else last.pt, 7 MB for a 56-layer network, so the next
#      lease can resume), each run's log, and summary.json with the figures when all four
#      finished, go into one tar, cut into pieces of 15 MiB with its sha256
#      (scripts/gpu_sr_files.py split): $OUT/degradation-seed$SEED/ holds log.txt,
#      runs.tar.sha256 and runs.tar.00, .01, ... Checked at the end ("what comes back").
#
# Epochs: 182 = 63,882 steps of 128 on 45,000 images (351 full batches an epoch), the
# paper's 64k iterations (He et al. 2016, Sec. 4.2). The CLI's default of 164 epochs is 64k
# steps on 50,000 images; on the 45,000 of the split it is 57,564 steps. EPOCHS overrides.
#
# Time: an estimate from issue #16 (not measured): 5-8 minutes for one 56-layer run alone
# on the H200 under CUDA graphs; four sharing the card take longer, so expect the 56-layer
# runs to need a second lease (step 2), and budget one command per seed.
#
# Cargo: bash scripts/gpu_pack.sh (.pack/: the data, about 19 MB; .whl/: the CLI's wheels).
# The device tool, seed 0 (then the same with SEED=1):
#   run command="SEED=0 bash scripts/gpu_degradation.sh" carry=[".pack", ".whl"]
#       timeout_s=600
# Here, after a lease: the pieces joined (checked) and unpacked into .gpu-deg, where the
# next lease resumes them from, and where `resnets experiment degradation --out` can read
# the finished records:
#   PYTHON=.venv/bin/python SEED=0 bash scripts/gpu_degradation.sh prepare-resume \
#       FILES_AT/degradation-seed0
# then, to resume (a 56-layer last.pt is 7 MB: four runs fit the 64 MiB):
#   run command="SEED=0 bash scripts/gpu_degradation.sh" carry=[".pack", ".whl", ".gpu-deg"]
# Dry run here (CPU, 20 images per class, one epoch, no compile, a 100-image test split;
# DRY_EPOCHS=2 took 5.4 minutes on 2 cores; DRY_EPOCHS=30 DEADLINE_S=130 tries the stop,
# then prepare-resume and the resume; PACK can be a pack of a few images per class):
#   DRY=1 OUT=/tmp/gpu-dry-deg PACK=.pack PYTHON=.venv/bin/python bash scripts/gpu_degradation.sh
set -u
PY=${PYTHON:-python3}
SEED=${SEED:-0}
RESUME=${RESUME:-.gpu-deg}
if [ "${1:-}" = prepare-resume ]; then  # here: what a lease brought back, ready to carry
  from=${2:?usage: SEED=N bash scripts/gpu_degradation.sh prepare-resume FILES_AT/degradation-seedN}
  [ -f "$from/runs.tar.00" ] || { echo "no runs.tar.00 in $from: nothing came back"; exit 1; }
  tmp=$(mktemp -d)
  PYTHONPATH=$PWD/src $PY scripts/gpu_sr_files.py join "$from/runs.tar.00" "$tmp/runs.tar" &&
    rm -rf "$RESUME/degradation-seed$SEED" && mkdir -p "$RESUME" &&
    tar xf "$tmp/runs.tar" -C "$RESUME" || { rm -rf "$tmp"; exit 1; }
  rm -rf "$tmp"
  for run in "$RESUME/degradation-seed$SEED"/*-seed"$SEED"; do
    echo "$(basename "$run"): $(wc -l < "$run/metrics.jsonl" 2>/dev/null || echo 0) epochs" \
         "$([ -f "$run/degradation.json" ] && echo finished || echo 'to resume')"
  done
  exit 0
fi
OUT=${OUT:?set OUT}
PACK=${PACK:-.pack}
EPOCHS=${EPOCHS:-182}
DEADLINE=$(( $(date +%s) + ${DEADLINE_S:-570} ))
DATA=${DATA_DIR:-/tmp/resnets-data}
RUNS=/tmp/resnets-degradation
NETS=(plain20 resnet20 plain56 resnet56)
DEST=$OUT/degradation-seed$SEED
BACK=/tmp/resnets-degradation-back/degradation-seed$SEED  # what goes into runs.tar
export PYTHONPATH=$PWD/src:$PWD PYTHONUNBUFFERED=1 RESNETS_CACHE=/tmp/resnets-cache
export CUDA_VISIBLE_DEVICES=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}  # 16 cores, 4 runs
mkdir -p "$DEST" && rm -rf "$BACK" && mkdir -p "$BACK/logs"
exec > >(tee -a "$DEST/log.txt") 2>&1

source scripts/gpu_common.sh

if [ -n "${DRY:-}" ]; then  # a few minutes on the CPU: every step, tiny sizes
  EPOCHS=${DRY_EPOCHS:-1}  # more, with a short DEADLINE_S, tries the stop and resume
  SIZE=(--subset-per-class 20 --device cpu)
  COMPILE=()
else
  SIZE=(--device cuda)
  COMPILE=(--set compile=true --set compile_mode=reduce-overhead)
fi

step machine
machine_report
echo "seed $SEED, $EPOCHS epochs, runs ${NETS[*]}"

step data
unpack cifar10 || exit 1
TREE=$DATA/cifar10
if [ -n "${DRY:-}" ]; then  # the experiment has no test limit: 10 test images per class
  TREE=$DATA/cifar10-dry
  rm -rf "$TREE"
  for split in train test; do
    for cls in "$DATA/cifar10/$split"/*/; do
      mkdir -p "$TREE/$split/$(basename "$cls")"
      find "$cls" -type f | LC_ALL=C sort | head -n $([ $split = train ] && echo 40 || echo 10) |
        xargs -I{} ln {} "$TREE/$split/$(basename "$cls")/"
    done
  done
fi
timeout $(( $(left) - 60 )) $PY -c "
import sys
from resnets.data.folder import load_folder
for split in ('train', 'test'):
    d = load_folder(sys.argv[1] + '/' + split)
    print(split, tuple(d.images.shape), 'decoded and cached')" "$TREE" || exit 1

step resume
rm -rf "$RUNS"; mkdir -p "$RUNS"
if [ -d "$RESUME/degradation-seed$SEED" ]; then
  for net in "${NETS[@]}"; do
    src=$RESUME/degradation-seed$SEED/$net-seed$SEED
    [ -d "$src" ] || continue
    cp -r "$src" "$RUNS/"
    echo "$net: brought back $(wc -l < "$src/metrics.jsonl" 2>/dev/null || echo 0) epochs" \
         "$([ -f "$src/degradation.json" ] && echo '(finished)')"
  done
else
  echo "nothing under $RESUME/degradation-seed$SEED: all four start from scratch"
fi

declare -A PID TRIED
launch() {  # launch NET [compile flags...]: one background run, bounded by the deadline
  local net=$1; shift
  timeout -s TERM -k 20 $(( $(left) - 40 )) $PY -m resnets experiment degradation \
    --data "$TREE" --out "$RUNS" --depths 20,56 --seeds "$SEED" --only "$net" \
    --epochs "$EPOCHS" --amp bf16 "${SIZE[@]}" "$@" >> "$BACK/logs/$net.log" 2>&1 &
  PID[$net]=$!
  echo "$net: pid ${PID[$net]}${*:+ ($*)}"
}

step "train: four runs at once"
for net in "${NETS[@]}"; do launch "$net" "${COMPILE[@]}"; done
running=${#NETS[@]}
while [ "$running" -gt 0 ]; do
  sleep 5
  running=0
  for net in "${NETS[@]}"; do
    pid=${PID[$net]}
    [ -z "$pid" ] && continue
    if kill -0 "$pid" 2>/dev/null; then running=$((running + 1)); continue; fi
    wait "$pid"; rc=$?
    PID[$net]=
    epochs=$(wc -l < "$RUNS/$net-seed$SEED/metrics.jsonl" 2>/dev/null || echo 0)
    echo "$net: exit $rc after $epochs epochs ($(left) s left)"
    if [ "$rc" -ne 0 ] && [ ! -f "$RUNS/$net-seed$SEED/last.pt" ] && [ -z "${TRIED[$net]:-}" ] \
       && [ ${#COMPILE[@]} -gt 0 ] && [ "$(left)" -gt 120 ]; then
      tail -5 "$BACK/logs/$net.log"
      echo "$net: failed before its first checkpoint under CUDA graphs: again in eager mode"
      TRIED[$net]=1
      launch "$net"
      running=$((running + 1))
    fi
  done
done

step "copy back"
for net in "${NETS[@]}"; do
  run=$RUNS/$net-seed$SEED
  [ -d "$run" ] || { echo "$net: no run folder"; continue; }
  mkdir -p "$BACK/$net-seed$SEED"
  # last.pt only while unfinished (the next lease resumes it); best.pt never
  find "$run" -maxdepth 1 -type f ! -name '*.pt' ! -name run.lock -exec cp {} "$BACK/$net-seed$SEED/" \;
  [ -f "$run/degradation.json" ] || cp "$run/last.pt" "$BACK/$net-seed$SEED/" 2>/dev/null
  echo "$net: $(wc -l < "$run/metrics.jsonl" 2>/dev/null || echo 0) epochs" \
       "$([ -f "$run/degradation.json" ] && echo finished || echo 'to resume')"
  tail -1 "$run/metrics.jsonl" 2>/dev/null
done
done=$(ls "$RUNS"/*-seed"$SEED"/degradation.json 2>/dev/null | wc -l)
if [ "$done" -eq ${#NETS[@]} ] && [ "$(left)" -gt 30 ]; then
  step "summary of the four"  # every run is finished, so this only reads and plots
  timeout $(( $(left) - 10 )) $PY -m resnets experiment degradation --data "$TREE" \
    --out "$RUNS" --depths 20,56 --seeds "$SEED" --epochs "$EPOCHS" --amp bf16 "${SIZE[@]}"
  cp "$RUNS"/summary.json "$RUNS"/*.png "$BACK/" 2>/dev/null
fi
tar cf "$DEST/runs.tar" -C "$(dirname "$BACK")" "$(basename "$BACK")" &&
  $PY scripts/gpu_sr_files.py split "$DEST/runs.tar" 15 >/dev/null &&
  echo "runs.tar: $(cat "$DEST/runs.tar.sha256")"

step "what comes back"
what_comes_back
step done

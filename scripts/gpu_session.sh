#!/usr/bin/env bash
# One GPU lease, one script (the device machine is lent for minutes, so it is all prepared
# here and run once): train a ResNet-56 on CIFAR-10 as a bundled-weight candidate, then
# check the CUDA paths and time training on the card.
#
#   1. unpack the CIFAR-10 JPEG tree carried in $PACK and check it byte for byte against
#      the digest made from ../shared/data here (the device machine has no ../shared);
#   2. a two-epoch probe run measures the epoch time on this card (its second epoch: the
#      first holds compilation and cuDNN's kernel timing, which made the first lease's
#      one-epoch probe overestimate by 1.7x), and the main run gets as many epochs as fit
#      in TRAIN_BUDGET_S (chosen before training, never on test);
#   3. the main run: `resnets train --recipe fast` at batch 256 + cutout 16, all 50,000
#      training images, under torch.compile with CUDA graphs (`reduce-overhead`): eager
#      steps of this small network are bound by kernel launches on the lent H200 (about
#      7,000 images/s), CUDA graphs measured 3.9x that (BENCHMARKS.md);
#   4. `resnets eval` of its weights on the GPU (fp32), the CUDA tests, and
#      benchmarks/bench_train_throughput.py on the card for ResNet-20 and ResNet-56.
#
# Every step is bounded by what is left of DEADLINE_S, so the files come back in time.
# Build its cargo first: bash scripts/gpu_pack.sh (.pack/ with the data, .whl/ wheels)
# On the device:  bash scripts/gpu_session.sh            (OUT is set by the device tool)
# Dry run here:   DRY=1 OUT=/tmp/gpu-dry PACK=.pack bash scripts/gpu_session.sh
set -u
OUT=${OUT:?set OUT}
PACK=${PACK:-.pack}
PY=${PYTHON:-python3}
BUDGET=${TRAIN_BUDGET_S:-300}
DEADLINE=$(( $(date +%s) + ${DEADLINE_S:-575} ))
SEED=${SEED:-11}
DATA=${DATA_DIR:-/tmp/resnets-data}
RUN=/tmp/resnets-gpu-run
export PYTHONPATH=$PWD/src:$PWD PYTHONUNBUFFERED=1 RESNETS_CACHE=/tmp/resnets-cache
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

source scripts/gpu_common.sh

if [ -n "${DRY:-}" ]; then  # a few minutes on the CPU: every step, tiny sizes
  SMALL=(--set subset_per_class=40 --set test_limit=200)
  COMPILE=()
  BENCH=(--device cpu --steps 3 --repeats 1 --workers 0 --threads 2)
else
  SMALL=()
  COMPILE=(--compile --set compile_mode=reduce-overhead)
  BENCH=(--device cuda --steps 40 --repeats 3 --workers 4,8 --threads 8)
fi

step machine
machine_report

step data
unpack cifar10 || exit 1

# batch 256 with the lr scaled linearly (Goyal et al. 2017) and the EMA decay squared, so
# its horizon in images is the batch-128 recipe's: half the steps, and on a GPU a step of
# this small network costs about the same at either batch (kernel launches, not arithmetic)
RECIPE=(--model resnet56 --recipe fast --batch-size 256 --lr 0.4 --set ema_decay=0.998
        --set cutout=16 --val-fraction 0 --seed "$SEED")
TRAIN=(-m resnets train "${RECIPE[@]}" "${COMPILE[@]}" --data "$DATA/cifar10" --quiet
       "${SMALL[@]}")

step "probe: two epochs"
rm -rf /tmp/resnets-probe
if ! timeout $(( $(left) - 300 )) $PY "${TRAIN[@]}" --epochs 2 --out /tmp/resnets-probe; then
  echo "the probe failed under ${COMPILE[*]:-eager}: falling back to eager"
  COMPILE=()
  TRAIN=(-m resnets train "${RECIPE[@]}" --data "$DATA/cifar10" --quiet "${SMALL[@]}")
  rm -rf /tmp/resnets-probe
  timeout $(( $(left) - 60 )) $PY "${TRAIN[@]}" --epochs 2 --out /tmp/resnets-probe || exit 1
fi
# what is left after the probe, less the main run's start-up and compilation and its
# final evaluation, caps the budget
CAP=$(( $(left) - 100 )); [ "$CAP" -lt "$BUDGET" ] && BUDGET=$CAP
echo "training budget: $BUDGET s"
EPOCHS=$($PY - "$BUDGET" <<'EOF'
import json, sys
row = json.loads(open("/tmp/resnets-probe/metrics.jsonl").read().splitlines()[-1])
budget = float(sys.argv[1])
# the second epoch, without compilation and cuDNN's kernel timing; +1 s per epoch for
# the checkpoint, the metrics files and the plot (measured on the first lease)
print(max(2, min(200, int(budget / (row["epoch_time_s"] + 1.0)))))
EOF
)
[ -n "${DRY:-}" ] && EPOCHS=2
echo "probe epoch: $(tail -1 /tmp/resnets-probe/metrics.jsonl)"
echo "main run: $EPOCHS epochs"

step "train: resnet56, $EPOCHS epochs"
rm -rf "$RUN"
echo "command: resnets train ${RECIPE[*]} ${COMPILE[*]} --epochs $EPOCHS --data ../shared/data/cifar10" \
     "${SMALL[*]}"
timeout $(( $(left) - 30 )) $PY "${TRAIN[@]}" --epochs "$EPOCHS" --out "$RUN"
echo "train exit: $?"
for f in config.json metrics.jsonl result.json curves.png model.safetensors; do
  cp "$RUN/$f" "$OUT/" 2>/dev/null
done
[ -f "$RUN/model.safetensors" ] || cp "$RUN/last.pt" "$OUT/" 2>/dev/null
cat "$RUN/result.json" 2>/dev/null

if [ -f "$RUN/model.safetensors" ] && [ "$(left)" -gt 40 ]; then
  step "eval on the GPU, fp32, single view and flip TTA"
  DEV=cuda; [ -n "${DRY:-}" ] && DEV=cpu
  timeout $(( $(left) - 20 )) $PY -m resnets eval --weights "$RUN/model.safetensors" \
    --data "$DATA/cifar10/test" --device $DEV --json > "$OUT/eval.json"
  timeout $(( $(left) - 20 )) $PY -m resnets eval --weights "$RUN/model.safetensors" \
    --data "$DATA/cifar10/test" --device $DEV --tta --json | $PY -c \
    "import json,sys; d=json.load(sys.stdin); print('flip TTA top1', d['top1'], 'n', d['n'])"
  $PY -c "import json; d=json.load(open('$OUT/eval.json')); print('top1', d['top1'], 'n', d['n'])"
fi

if [ "$(left)" -gt 60 ]; then
  step "CUDA tests"
  timeout $(( $(left) - 40 )) $PY -m pytest -q -p no:cacheprovider tests/train/test_cuda.py \
    tests/models/test_imresize.py tests/weights/test_state_dict_io.py
fi

for model in resnet20 resnet56; do
  if [ "$(left)" -gt 45 ]; then
    step "training throughput on the card: $model"
    timeout $(( $(left) - 15 )) $PY benchmarks/bench_train_throughput.py \
      --data "$DATA/cifar10" --model $model "${BENCH[@]}"
  fi
done
step done

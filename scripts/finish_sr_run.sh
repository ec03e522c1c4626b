#!/bin/bash
# Issue #18's measurements once an SR training run has finished, in the order they depend on
# each other; every step's output goes to OUT (default runs/sr-finish) as a log or JSON:
#     scripts/finish_sr_run.sh ~/resnets-runs/sr-edsr_baseline-x234-16k "resnets train-sr ..."
# 1. the last curve point (best.pt: Set5/Set14 x2/x3/x4) into docs/sr/<model>_x234-16k-curve.jsonl
# 2. bundle it (fp16 in the file: 4 MB, PSNR moved <= 0.0004 dB at step 3,750) with its record
# 3. PSNR parity of every installed backend against fp32 eager on Set5 (best.pt)
# 4. speed of every bundled model at x2/x4 on a 12 MP output, 2 threads, fresh model cache
# 5. quality of every bundled model beside the published methods, with self-ensemble apart
# 6. make demo, timed
# Run it with nothing else on the cores (it pauses background trainers itself: scripts/quiet).
set -euo pipefail
run=${1:?usage: finish_sr_run.sh RUN_FOLDER \"THE TRAINING COMMAND\" [OUT]}
command=${2:?give the command that trained the run (it goes into the bundled record)}
out=${3:-runs/sr-finish}
cd "$(dirname "$0")/.."
mkdir -p "$out"
[ -f "$run/result.json" ] || { echo "error: $run has no result.json: the run has not finished" >&2; exit 2; }
py=".venv/bin/python"
export OMP_NUM_THREADS=2 PYTHONPATH=src
model=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['model'])" "$run/config.json")
q() { scripts/quiet "$@"; }

echo "== 1. curve point" >&2
q $py scripts/sr_checkpoint_curve.py "$run" --log "docs/sr/${model}_x234-16k-curve.jsonl" \
    | tee "$out/curve.log"
echo "== 2. bundle" >&2
q $py scripts/bundle_sr_weights.py "$run" --store-dtype float16 --command "$command" \
    | tee "$out/bundle.log"
echo "== 3. backend parity (Set5)" >&2
q $py scripts/sr_backend_parity.py "$run" --bench Set5 | tee "$out/parity.log"
echo "== 4. speed" >&2
cache=$(mktemp -d)
q env RESNETS_CACHE="$cache" $py benchmarks/bench_sr.py speed --threads 2 --repeats 3 \
    --json "$out/speed.json" | tee "$out/speed.log"
rm -rf "$cache"
echo "== 5. quality" >&2
q $py benchmarks/bench_sr.py quality --json "$out/quality.json" | tee "$out/quality.log"
echo "== 6. make demo" >&2
{ time q make demo; } 2>&1 | tee "$out/demo.log"
echo "done: $out" >&2

#!/bin/bash
# Issue #18's measurements once an SR training run has finished, in the order they depend on
# each other; every step's output goes to OUT (default runs/sr-finish) as a log or JSON:
#     scripts/finish_sr_run.sh ~/resnets-runs/sr-edsr_baseline-x234-16k "resnets train-sr ..."
# 1. the last curve point (best.pt: Set5/Set14 x2/x3/x4) into docs/sr/<model>_x234-16k-curve.jsonl
# 2. bundle it (fp16 in the file: 4 MB, PSNR moved <= 0.0002 dB at step 7,250) with its record
# 3. PSNR parity of the installed backends against fp32 eager on Set5 (best.pt)
# 4. quality of every bundled model beside the published methods, with self-ensemble apart
# 5. make demo, timed
# 6. the server's upscaler with the new default: start with an empty / a filled model cache,
#    a 256x256 picture's latency through --sr-backend auto against eager (README's numbers)
# 7. speed of every bundled model at x2/x4 on a 12 MP output, 2 threads, fresh model cache
#    (the longest step: an estimated 25 minutes for edsr_baseline's three fp32 backends here)
# Resumable: a step that finished leaves OUT/<step>.ok and is skipped on the next call, so a
# finish cut off by the end of a session goes on where it stopped (delete the .ok to redo).
# bf16 runs only on a CPU with native bf16 (resnets.devices.cpu_has_native_bf16) or with
# BF16=1: emulated (AVX2 only) it is ~12x slower than fp32, a 12 MP x2 pass of
# edsr_baseline about 25 minutes. Without it, the steps say so in their logs.
# Run it with nothing else on the cores (it pauses background trainers itself: scripts/quiet).
set -euo pipefail
run=${1:?usage: finish_sr_run.sh RUN_FOLDER \"THE TRAINING COMMAND\" [OUT]}
command=${2:?give the command that trained the run (it goes into the bundled record)}
out=${3:-runs/sr-finish}
cd "$(dirname "$0")/.."
[ -f "$run/result.json" ] || { echo "error: $run has no result.json: the run has not finished" >&2; exit 2; }
mkdir -p "$out"
py=${PY:-.venv/bin/python}
quiet=${QUIET:-scripts/quiet}  # PY, QUIET and MAKE are replaced by tests/scripts
make=${MAKE:-make}
export OMP_NUM_THREADS=2 PYTHONPATH=src
model=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['model'])" "$run/config.json")
bf16=${BF16:-$($py -c "from resnets.devices import cpu_has_native_bf16 as f; print(int(f()))")}
if [ "$bf16" = 1 ]; then
    parity_backends=torch,bf16,onnxruntime,openvino; speed_backends=(torch bf16 onnxruntime openvino)
else
    parity_backends=torch,onnxruntime,openvino; speed_backends=(torch onnxruntime openvino)
    echo "bf16 left out: this CPU has no native bf16 (BF16=1 runs it anyway)" | tee "$out/bf16-skipped.log" >&2
fi

# step NAME CMD...: run CMD with the trainers paused, its output into OUT/NAME.log, once.
step() {
    local name=$1; shift
    if [ -f "$out/$name.ok" ]; then echo "== $name: done before ($out/$name.ok), skipped" >&2; return; fi
    echo "== $name" >&2
    local start=$SECONDS
    $quiet "$@" 2>&1 | tee "$out/$name.log"
    echo "$((SECONDS - start)) s" > "$out/$name.ok"
}

step 1-curve $py scripts/sr_checkpoint_curve.py "$run" --log "docs/sr/${model}_x234-16k-curve.jsonl"
step 2-bundle $py scripts/bundle_sr_weights.py "$run" --store-dtype float16 --command "$command"
step 3-parity $py scripts/sr_backend_parity.py "$run" --bench Set5 --backends "$parity_backends"
step 4-quality $py benchmarks/bench_sr.py quality --json "$out/quality.json"
step 5-demo bash -c "time $make demo"
step 6-serve $py benchmarks/bench_serve_upscaler.py --threads 2 --json "$out/serve-upscaler.json"
cache=$(mktemp -d)
step 7-speed env RESNETS_CACHE="$cache" $py benchmarks/bench_sr.py speed --threads 2 --repeats 3 \
    --backends "${speed_backends[@]}" --json "$out/speed.json"
rm -rf "$cache"
echo "done: $out" >&2

#!/usr/bin/env bash
# BENCHMARKS.md's GPU column in one call on a lent GPU machine (the `device` tool's `run`), never in tests.
#
# The machine's image has torch, transformers, timm, huggingface_hub and safetensors but not diffusers or
# open_clip: carry them as wheels for its Python (3.12), from the repository root here:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform any -d .whl \
#       diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth importlib_metadata
# then run `bash benchmarks/device_gpu.sh` there with carry [".whl"]. Each benchmark has its own time limit
# and its whole log under $OUT; a summary (the JSON lines) is printed last.
set -u
OUT=${OUT:-/tmp/device-gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/smi.txt"
grep -m1 "model name" /proc/cpuinfo; nproc
"$PY" -c "import torch, diffusers, open_clip, transformers; print('torch', torch.__version__, 'diffusers',
diffusers.__version__, 'open_clip', open_clip.__version__, 'transformers', transformers.__version__,
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')" || exit 1

bench() {  # name, seconds, script and arguments
    local name=$1 limit=$2
    shift 2
    echo "== $name: $* (limit ${limit} s)"
    local t0=$SECONDS
    timeout "$limit" "$PY" "$@" > "$OUT/$name.log" 2>&1
    echo "rc=$? in $((SECONDS - t0)) s"
    tr '\r' '\n' < "$OUT/$name.log" | grep -E '^\{' | tail -1 > "$OUT/$name.json"  # tqdm's bars end in \r
}
bench real_models "${LIMIT_REAL:-220}" benchmarks/bench_real_models.py --devices cuda
bench quick_train "${LIMIT_TRAIN:-180}" benchmarks/bench_quick_train.py --reference
bench zero_shot "${LIMIT_ZERO:-100}" benchmarks/bench_zero_shot.py --skip-things
echo "== summary"
for f in "$OUT"/*.json; do echo "$(basename "$f"): $(cat "$f")"; done

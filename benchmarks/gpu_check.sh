#!/usr/bin/env bash
# The GPU check: one prepared script, everything under $OUT; steps 1-2 take about 9 minutes
# on one H200, step 3 a few more (not yet timed on a GPU).
#
#   1. pytest -m gpu (CUDA tests; tests/training/test_gpu.py holds the DeepSpeed ZeRO-2 +
#      CPU-offload stage C run exported to an adapter, and tests/generation/
#      test_generation_memory.py every offload mode on CUDA)           -> $OUT/pytest_gpu.log
#   2. benchmarks/gpu_check.py: stage C steps at the paper's latent size on the real
#      Wan 2.1-1.3B architecture (random weights, bf16, compile_residuals on Triton) with
#      the adapter's forward+backward share; generation at 81 x 480 x 832 with and without
#      the adapter; torch.cuda.max_memory_allocated for each  -> $OUT/gpu.md, $OUT/gpu_check.json
#   3. benchmarks/gpu_resume_check.py: the tiny stage C config in bf16 (DeepSpeed ZeRO-2 +
#      CPU offload when DeepSpeed is installed) run twice uninterrupted and once stopped
#      mid-epoch and resumed; the largest adapter-weight difference between the two
#      uninterrupted runs and between an uninterrupted and the resumed run
#                                                          -> $OUT/resume.md, $OUT/resume.json
#
# Targets (GPU, ratios from one run): adapter fwd+bwd <= 10 % of the frozen forward;
# generation with the adapter <= 1.02 x without.
#
# Usage:
#   benchmarks/gpu_check.sh             # on a CUDA machine, from the repo root; OUT defaults to ./gpu_check_out
#   benchmarks/gpu_check.sh --dry-run   # anywhere: small sizes on the CPU, same code paths
#   GPU_CHECK_STEPS="3" benchmarks/gpu_check.sh   # only some of the steps (default "1 2 3")
#
# With the device tool (run from the repo root; $OUT is set there): the image has torch,
# lightning, transformers, accelerate and pytest but not diffusers, jsonargparse, PyAV or
# DeepSpeed. Once, here: `echo /.whl/ >> .git/info/exclude`, then
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl diffusers==0.42.1 jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 av==18.1.0
# (DeepSpeed publishes no wheel: without it the ZeRO-2 test is skipped and the log says so.)
# Then: run(command="GPU_CHECK_STEPS='1 2' benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
# and, as steps 1-2 take most of the 600 s, step 3 in a second call with GPU_CHECK_STEPS=3.
# The script installs .whl/*.whl into /tmp/site itself when the folder is there.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=""
[ "${1:-}" = "--dry-run" ] && DRY="--dry-run"
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && [ -z "$DRY" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
status=0
{ command -v nvidia-smi >/dev/null && nvidia-smi; "$PY" -c "import torch, diffusers; print(torch.__version__, diffusers.__version__, torch.cuda.is_available())"; } \
  >"$OUT/env.txt" 2>&1
STEPS="${GPU_CHECK_STEPS:-1 2 3}"
has() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if ! has 1; then
  :
elif [ -z "$DRY" ]; then
  timeout 240 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest_gpu.log" || status=1
else
  "$PY" -m pytest -m gpu -q -p no:cacheprovider --collect-only tests >"$OUT/pytest_gpu.log" 2>&1 || status=1
fi
if has 2; then
  timeout 360 "$PY" benchmarks/gpu_check.py $DRY --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log" || status=1
fi
if has 3; then
  timeout 420 "$PY" benchmarks/gpu_resume_check.py $DRY --out "$OUT" >"$OUT/resume.log" 2>&1 \
    || status=1
  tail -n 8 "$OUT/resume.log"
fi
echo "gpu_check: exit $status; results in $OUT"
exit $status

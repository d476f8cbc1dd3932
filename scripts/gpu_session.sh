#!/usr/bin/env bash
# The GPU measurements of the fast-loop issue, in parts that each fit one 10-minute device call.
# On the GPU machine (no internet), from the repository root, with .whl carried (scripts/device_wheels.sh):
#   bash scripts/gpu_session.sh tests   # CUDA tests (CUDA graphs step, sync-free ++, resume, fast configuration),
#                                       # the preprocessing pass with 8/12 workers, B/32 TA8 loop
#   bash scripts/gpu_session.sh job     # B/32 TA8 on the real test sets' sizes: the whole job, bf16, compiled
#   bash scripts/gpu_session.sh large   # L/14 TA20 on one GPU: bf16 task vectors, uint8 inputs, compiled
# Logs, tables and JSON go to $OUT (or ./gpu-results).
set -uo pipefail
part=${1:?tests, job or large}
out=${OUT:-gpu-results}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PATH=/tmp/site/bin:$PATH
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
python3 -c "import torch, transformers, fusion_bench_tinting; print(torch.__version__, transformers.__version__)" | tee -a "$out/device.txt"
bench() { python3 scripts/bench_speed.py --num-workers 12 --out "$out" "$@" 2>&1 | grep -v -E 'it/s\]|s/it\]' ; }
case "$part" in
  tests)
    python3 -m pytest -q -s -p no:cacheprovider tests/test_adaptation.py tests/test_compiled_step.py tests/test_resume.py \
      tests/test_behaviour.py -k "cuda" 2>&1 | tee "$out/gpu_tests.log"
    for workers in 8 12; do  # the preprocessing pass with many workers: where the main process bounded it
      python3 scripts/bench_preprocess.py --images 8192 --workers $workers --dtype uint8 2>&1 | grep -v -E 'it/s\]|s/it\]'
    done | tee "$out/bench_preprocess.log"
    bench --arch ViT-B-32 --tasks 8 --steps 30 --images 256 \
      --methods adamerging,model_tinting,model_tinting_plusplus,model_tinting_compiled | tee "$out/bench_b32.log"
    ;;
  job)  # a whole job: adaptation and FusionBench's evaluation
    bench --arch ViT-B-32 --tasks 8 --steps 500 --images real --precision bf16-mixed \
      --option input_dtype=uint8 --methods model_tinting_compiled | tee "$out/bench_b32_job_decoded.log"
    ;;
  large)
    # building the suite writes 21 L/14 towers (~25 GB); one method keeps the call within ten minutes
    bench --arch ViT-L-14 --tasks 20 --steps 20 --images 256 --precision bf16-mixed \
      --option task_vector_dtype=bfloat16 --option input_dtype=uint8 \
      --methods model_tinting_compiled | tee "$out/bench_l14.log"
    ;;
  *) echo "unknown part $part: tests, job or large" >&2; exit 2 ;;
esac

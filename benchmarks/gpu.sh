#!/usr/bin/env bash
# The whole GPU check in one command on a fresh GPU machine that reaches no network: the
# training engine's throughput table (ours vs sentence-transformers' CachedMNRL, batch
# 4096, 128 + 128 tokens) and cpt-code from Qwen2.5-Coder-0.5B (experiments/plans/
# cpt-code.yaml), evaluated. Prepare its inputs on the CPU first:
#
#     python benchmarks/gpu_prepare.py --carry pairs.tar.gz data.tar.gz   # -> .gpu/parts/
#
# copy the parts to STASH on the GPU machine (one or more calls: they travel in pieces),
# then, in the repository root there:
#
#     STASH=/tmp/stash OUT=/tmp/out TRAIN_MINUTES=4 BUDGET=560 bash benchmarks/gpu.sh
#
# BUDGET (seconds, 0: none) caps the whole run: training gets what the table leaves, less
# 150 s for evaluating and packing.
#
# Tested end to end on the CPU with a tiny model (tests/benchmarks/test_gpu_run.py).
set -uo pipefail
STASH=${STASH:-/tmp/stash}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:${SITE:-/tmp/site}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
export CPT_CACHE=${CPT_CACHE:-/tmp/cpt-cache}
# GPU_RUN_ARGS: more options of benchmarks/gpu_run.py, split on spaces (no quoting)
{
  date
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  # shellcheck disable=SC2086
  python3 benchmarks/gpu_run.py --stash "$STASH" --out "$OUT" \
    --site "${SITE:-/tmp/site}" --train-minutes "${TRAIN_MINUTES:-4}" --budget "${BUDGET:-0}" \
    ${GPU_RUN_ARGS:-}
  status=$?
  date
  exit $status
} 2>&1 | tee "$OUT/gpu.log"

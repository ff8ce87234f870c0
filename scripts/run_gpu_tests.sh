#!/usr/bin/env bash
# GPU checks in one go: the tests marked `gpu` (skipped on CPU-only machines), then the GPU
# throughput benchmark (random models shaped like LLaVA-1.6-7B and Grounding DINO tiny; no
# download). Extra arguments go to pytest; GPU_BENCH_ARGS overrides the benchmark's (default
# --quick; e.g. GPU_BENCH_ARGS="--images 128 --mllm-batch 48").
#
#   scripts/run_gpu_tests.sh
#   GPU_BENCH_ARGS="" scripts/run_gpu_tests.sh -x      # full benchmark
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
python -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
python -m pytest -q -m gpu tests/ "$@"
python bench/gpu_throughput.py ${GPU_BENCH_ARGS---quick}

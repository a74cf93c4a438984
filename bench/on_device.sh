#!/usr/bin/env bash
# The GPU checks, run on the device machine (PyTorch and CUDA there; no hydra/omegaconf, no internet).
# Here, once:  mkdir -p .whl && pip download --no-deps -d .whl hydra-core omegaconf
#              && pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3     (.whl/ is git-ignored)
# Then with the device tool:  run(command="bash bench/on_device.sh", carry=[".whl"])
# It runs the gpu-marked tests and the engine-vs-loop benchmark on CUDA; results land in $OUT.
set -uo pipefail
out="${OUT:-/tmp/out}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -m pytest -m gpu -p no:cacheprovider tests/test_train.py 2>&1 | tee "$out/gpu_tests.log"
python3 bench/engine_vs_loop.py --device cuda --epochs 5 --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench_gpu.log"

#!/usr/bin/env bash
# The CUDA checks of the GPU path in one run (about 10 minutes on one H200), for a machine with a
# GPU, torch, triton and pytest: the CUDA tests (Triton kernels against the reference, a layer on
# CUDA against the CPU), then the scan and model benchmarks against the baseline.
#     bash benchmarks/gpu_checks.sh [output folder]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-checks}"
mkdir -p "$out"
pip install -q --no-deps -e . > "$out/install.log" 2>&1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python -m pytest -q tests/test_ops_scan_triton.py tests/test_ops_scan.py tests/test_ss2d.py -k "cuda or triton" \
    > "$out/tests.txt" 2>&1
echo "tests: exit $?" >> "$out/tests.txt"
python benchmarks/bench_scan.py --quick --device cuda > "$out/bench_scan_fp32.txt" 2>&1
python benchmarks/bench_scan.py --quick --device cuda --dtype bfloat16 > "$out/bench_scan_bf16.txt" 2>&1
python benchmarks/bench_model.py --device cuda --quick --batch 16 > "$out/bench_model.txt" 2>&1
tail -n +1 "$out"/*.txt

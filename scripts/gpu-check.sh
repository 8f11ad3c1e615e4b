#!/usr/bin/env bash
# GPU check for a host with CUDA: the gpu-marked tests, then a CPU-versus-CUDA throughput comparison on a
# conv net, printed as one summary table. Run from the repository root. Uses the active python (set
# PYTHONPATH to an onnxruntime-gpu install when the host's own onnxruntime is CPU-only).
set -uo pipefail
PY=${PYTHON:-python3}
echo "== onnxruntime"
$PY -c "import onnxruntime as o; print(o.__version__, o.get_device(), o.get_available_providers())"
echo "== gpu tests"
$PY -m pytest tests/gpu -m gpu -q -p no:cacheprovider
tests_rc=$?
echo "== CPU vs CUDA throughput"
$PY -m bench.gpu
bench_rc=$?
exit $(( tests_rc != 0 || bench_rc != 0 ))

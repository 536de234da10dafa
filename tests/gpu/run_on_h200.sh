#!/usr/bin/env bash
# The GPU tests and the native-vs-forwarded benchmark, in one go on a GPU machine.
# Usage (repository root): OUT=/some/dir bash tests/gpu/run_on_h200.sh [tests|bench|all]
# (one part per call where a call is limited to 10 minutes: the tests take about 5, the bench about 6)
# Writes: $OUT/gpu_tests.log, $OUT/gpu_tests.json (figures), $OUT/junit.xml, $OUT/bench.json, $OUT/bench.log
set -uo pipefail
OUT=${OUT:-/tmp/kvmgpu-gpu-results}
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/guest-agent:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export KVMGPU_RESULTS="$OUT" KVMGPU_COMPUTE_DIR="$(mktemp -d)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# PTX is rebuilt where nvcc is (it is checked in too)
if command -v nvcc >/dev/null; then nvcc -ptx -arch=compute_80 tests/kernels/kernels.cu -o /tmp/kernels.ptx && cp /tmp/kernels.ptx tests/kernels/kernels.ptx; fi
# the worker's C module (kvmgpu/backend/launcher.c), as `pip install` builds it; the compiler
# by hand where setuptools is missing. Without it the worker's driver calls go through cuda-bindings.
# (always built afresh: a library left from another version of the tree would be stale)
rm -f kvmgpu/backend/_launcher*.so
python3 setup.py -q build_ext --inplace 2>/dev/null \
  || cc -O2 -shared -fPIC -Iguest-agent/include $(python3-config --includes) kvmgpu/backend/launcher.c \
       -o "kvmgpu/backend/_launcher$(python3-config --extension-suffix)"
# ... and the guest's copier (guest-agent/kvmgpu_guest/copier.c, kvmgpu_guest._copier) the same way
rm -f guest-agent/kvmgpu_guest/_copier*.so
(cd guest-agent && python3 setup.py -q build_ext --inplace 2>/dev/null) \
  || cc -O2 -shared -fPIC -pthread -Iguest-agent/include $(python3-config --includes) guest-agent/kvmgpu_guest/copier.c \
       -o "guest-agent/kvmgpu_guest/_copier$(python3-config --extension-suffix)"
part=${1:-all}
tests_rc=0 bench_rc=0
if [ "$part" != bench ]; then
timeout 330 python3 -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/junit.xml" tests/gpu tests/compute 2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=$?
fi
if [ "$part" != tests ]; then
timeout 400 python3 -m kvmgpu.benchgpu --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
bench_rc=$?
fi
echo "tests rc=$tests_rc bench rc=$bench_rc"
exit $(( tests_rc || bench_rc ))

#!/usr/bin/env bash
# The GPU tests and the native-vs-forwarded benchmark, in one go on a GPU machine.
# Usage (repository root): OUT=/some/dir bash tests/gpu/run_on_h200.sh [tests|bench|libcuda|all|torch]
# (about 1, 1 and 4 minutes on an H200/H100: tests, the Python path's benchmark, and the native
# library's: its C benchmark against native C, then NVIDIA's runtime, cuda-bindings, PyTorch, CuPy
# and numba-cuda on it against their native runs; `torch`, not part of `all`, about 7 minutes:
# issue 22's PyTorch proof and benchmarks, bench/gpu/torch_gpu.sh, into $OUT/torch/)
# Writes: $OUT/gpu_tests.log, $OUT/gpu_tests.json (figures), $OUT/junit.xml, $OUT/bench.json, $OUT/bench.log,
# $OUT/driver_bench/ (driver_bench.json, the table in $OUT/driver_bench.log), $OUT/libcuda/ (summary.txt)
# Where the GPU machine has no nvcc or cuda.h, build the programs here first (PREBUILT=gpu-progs):
#   BUILD_ONLY=gpu-progs bash bench/gpu/libcuda_gpu.sh && python3 bench/gpu/driver_bench.py --build-only gpu-progs
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
# ... and the guest's libraries (libcuda.so.1, libnvidia-ml.so.1) into guest-agent/kvmgpu_guest/lib/,
# where kvmgpu_guest.driver (the benchmark's Python path) loads libcuda.so.1
rm -rf guest-agent/kvmgpu_guest/lib
python3 guest-agent/libcuda/build.py guest-agent/kvmgpu_guest/lib >/dev/null
part=${1:-all}
tests_rc=0 bench_rc=0 libcuda_rc=0 torch_rc=0
if [ "$part" = tests ] || [ "$part" = all ]; then
timeout 330 python3 -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/junit.xml" tests/gpu tests/compute 2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=$?
fi
if [ "$part" = bench ] || [ "$part" = all ]; then
timeout 400 python3 -m kvmgpu.benchgpu --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
bench_rc=$?
fi
if [ "$part" = libcuda ] || [ "$part" = all ]; then
pre=${PREBUILT:+--prebuilt $PREBUILT}
timeout 200 python3 bench/gpu/driver_bench.py $pre --out "$OUT/driver_bench" 2>&1 | tee "$OUT/driver_bench.log"
libcuda_rc=$?
rm -rf "$OUT/driver_bench/lib"
OUT="$OUT/libcuda" timeout 280 bash bench/gpu/libcuda_gpu.sh > "$OUT/libcuda.log" 2>&1 || libcuda_rc=1
tail -25 "$OUT/libcuda.log"
rm -rf "$OUT/libcuda/lib"; find "$OUT/libcuda" -maxdepth 1 -type f -perm -u+x -delete  # (the programs: not results)
fi
if [ "$part" = torch ]; then
OUT="$OUT/torch" timeout 570 bash bench/gpu/torch_gpu.sh > "$OUT/torch.log" 2>&1 || torch_rc=1
tail -40 "$OUT/torch.log"
rm -rf "$OUT/torch/lib" "$OUT/torch"/cache_*  # (the library and the compilers' caches: not results)
fi
echo "tests rc=$tests_rc bench rc=$bench_rc libcuda rc=$libcuda_rc torch rc=$torch_rc"
exit $(( tests_rc || bench_rc || libcuda_rc || torch_rc ))

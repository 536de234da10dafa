#!/usr/bin/env bash
# nvcc-built CUDA programs on the native guest library (libcuda.so.1), forwarded to a loopback
# worker on the cuda backend, against the same programs run natively. On the GPU machine:
#
#     OUT=/tmp/libcuda-gpu bash bench/gpu/libcuda_gpu.sh
#
# Builds guest-agent/libcuda into $OUT/lib and, with nvcc, the test programs: the runtime program
# (tests/guest/programs/vector_add_runtime.cu) with cudart static and shared, a cuda-samples style
# matrixMul (matrix_mul_runtime.cu), CUDA graphs captured from a stream (graphs_runtime.cu), what
# PyTorch asks of the runtime (runtime_features.cu), PyTorch, CuPy and numba-cuda where this Python
# has them (frameworks.py; FRAMEWORKS="torch" picks), and the driver-API
# vectorAdd (vector_add_driver.cu, -lcuda, the PTX of tests/kernels), and where this Python has
# NVIDIA's cuda-bindings, cuda_bindings_driver.py. Each runs natively, then as
# a guest: the GPU hidden from the guest process only (its /dev/nvidia* are /dev/null in a mount
# namespace, or CUDA_VISIBLE_DEVICES=), so that nothing but forwarded calls can succeed, and
# $OUT/lib first on LD_LIBRARY_PATH, against
# `kvmgpu worker --backend cuda` in loopback. Writes $OUT/{native,forwarded}_<program>.txt, the
# worker's log and counters ($OUT/worker.log, $OUT/stats.json), $OUT/summary.txt; exits 1 when a
# result differs from the native run's or a forwarded run fails. (BACKEND=sim tries the script
# where there is no GPU: the forwarded runs pass, the native ones cannot.) Where the GPU machine has
# no nvcc: `BUILD_ONLY=DIR bash bench/gpu/libcuda_gpu.sh` where nvcc is (DIR inside the tree, so
# that it travels), then `PREBUILT=DIR bash bench/gpu/libcuda_gpu.sh` on the GPU machine.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/kvmgpu-libcuda-gpu.XXXXXX)}
PY=${PYTHON:-python3}
ARCH=${ARCH:-"-gencode arch=compute_80,code=compute_80 -gencode arch=compute_90,code=sm_90"}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
echo "== $(date -u) on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
P="$ROOT/tests/guest/programs"
PROGS=${PROGS-"runtime_static runtime_shared matrixmul_static graphs_static runtime_features driver_api graphs_driver"}
"$PY" "$ROOT/guest-agent/libcuda/build.py" "$OUT/lib" || { echo "cannot build libcuda.so.1"; exit 2; }
if [ -n "${PREBUILT:-}" ]; then # programs built elsewhere (BUILD_ONLY=DIR there), with their libcudart
    for p in $PROGS; do cp "$PREBUILT/$p" "$OUT/" || { echo "no $p in PREBUILT=$PREBUILT"; exit 2; }; done
    cp "$PREBUILT"/libcudart.so* "$OUT/" 2>/dev/null
    echo "== programs from $PREBUILT; results in $OUT"
else
    NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null) || {
        echo "no nvcc on PATH or in /usr/local/cuda/bin: build the programs where it is with BUILD_ONLY=DIR, then"
        echo "run this with PREBUILT=DIR"; exit 2; }
    CUDA_LIB=$(for d in "$(dirname "$(readlink -f "$NVCC")")/../lib64" "${CUDA_HOME:-/usr/local/cuda}/lib64"; do
                   ls "$d"/libcudart.so.* >/dev/null 2>&1 && readlink -f "$d" && break; done)
    [ -n "$CUDA_LIB" ] || { echo "no libcudart.so beside nvcc or in \$CUDA_HOME/lib64"; exit 2; }
    DEST=${BUILD_ONLY:-$OUT}
    mkdir -p "$DEST"
    echo "== nvcc $("$NVCC" --version | tail -1); programs in $DEST, results in $OUT"
    build() { # name, then nvcc arguments ($ORIGIN: a libcudart.so copied beside them is found)
        local name=$1; shift
        "$NVCC" $ARCH -o "$DEST/$name" "$@" -Xlinker "-rpath=\$ORIGIN:$CUDA_LIB" || { echo "cannot build $name"; exit 2; }
    }
    build runtime_static "$P/vector_add_runtime.cu"
    build runtime_shared -cudart shared "$P/vector_add_runtime.cu"
    build matrixmul_static "$P/matrix_mul_runtime.cu"
    build graphs_static "$P/graphs_runtime.cu"
    build runtime_features "$P/runtime_features.cu"
    build driver_api "$P/vector_add_driver.cu" -L "$OUT/lib" -lcuda  # (soname libcuda.so.1: the loader picks)
    CUDA_INC=$(for d in "$(dirname "$(readlink -f "$NVCC")")/../include" "${CUDA_HOME:-/usr/local/cuda}/include"; do
                   [ -f "$d/cuda.h" ] && readlink -f "$d" && break; done)
    cc -std=c11 -I "$CUDA_INC" -o "$DEST/graphs_driver" "$P/graphs_driver.c" -L "$OUT/lib" -lcuda -lpthread ||
        { echo "cannot build graphs_driver"; exit 2; }
    if [ -n "${BUILD_ONLY:-}" ]; then
        cp -P "$CUDA_LIB"/libcudart.so.* "$DEST/" && echo "== built into $DEST (run with PREBUILT=$DEST)"; exit 0
    fi
fi
# NVIDIA's cuda-bindings (the cuda backend's own dependency) on the library, where this Python has them
printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$PY" "$P/cuda_bindings_driver.py" > "$OUT/cuda_bindings"
chmod +x "$OUT/cuda_bindings"
PROGRAMS="$PROGS"
[ -z "${NO_CUDA_BINDINGS:-}" ] && "$PY" -c "import cuda.bindings.driver" 2>/dev/null && PROGRAMS="$PROGRAMS cuda_bindings"
# what users run (tests/guest/programs/frameworks.py), where this Python has it: each check is a line
for fw in ${FRAMEWORKS-torch cupy numba}; do
    module=$fw; [ "$fw" = numba ] && module=numba.cuda
    "$PY" -c "import $module" 2>/dev/null || { echo "(no $fw in $PY)"; continue; }
    printf '#!/bin/sh\nexec "%s" "%s" %s\n' "$PY" "$P/frameworks.py" "$fw" > "$OUT/fw_$fw"
    chmod +x "$OUT/fw_$fw"; PROGRAMS="$PROGRAMS fw_$fw"
done
args_of() { case "$1" in driver_api|cuda_bindings) echo "$ROOT/tests/kernels/kernels.ptx";;
                         graphs_driver) echo "$ROOT/tests/kernels/kernels.ptx fork";; esac; }

# the results a program prints that must equal the native run's (not the device's name or size,
# nor managed memory, which a VM is not given)
results() { grep -E '^(OK|FAIL) (torch |cupy |numba |graphs: |round trip|module and function|vectorAdd|matrixMul|saxpy|memset|streams|symbols|unified|page-locked|after a reset|elapsed|properties|function attributes|launch with|occupancy|cudaLaunchKernelExC|cudaMemcpy2D|cudaMemset2D|cudaMemcpy3D|memory pool|limits|tensor map|im2col tensor map|max active clusters|fork: )' "$1" | sort; }

for p in $PROGRAMS; do
    timeout 300 "$OUT/$p" $(args_of "$p") > "$OUT/native_$p.txt" 2>&1
    echo "native $p: exit $?"
done
# the GPU hidden from the guest processes (HIDE), and their worker (bench/gpu/loopback_worker.sh)
. "$ROOT/bench/gpu/loopback_worker.sh"
guest_hide
$HIDE "$OUT/runtime_static" > "$OUT/hidden_runtime_static.txt" 2>&1
echo "native runtime_static with the GPU hidden (must fail): exit $?"

start_worker libcuda-gpu $((8 << 30)) $((256 << 20))

same() { # a forwarded run finished and printed the native run's results
    local f="$OUT/forwarded_$1.txt"
    grep -q '^DONE' "$f" && [ -n "$(results "$f")" ] && [ "$(results "$OUT/native_$1.txt")" = "$(results "$f")" ]
}
status=0
for p in $PROGRAMS; do
    timeout 300 $HIDE env KVMGPU_SOCKET="$SOCK" KVMGPU_SHM="$SHM" LD_LIBRARY_PATH="$OUT/lib" \
        "$OUT/$p" $(args_of "$p") > "$OUT/forwarded_$p.txt" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && same "$p"; then
        echo "forwarded $p: exit 0, the native run's results"
    else
        echo "FORWARDED $p: exit $rc, results differ from the native run's:"
        diff <(results "$OUT/native_$p.txt") <(results "$OUT/forwarded_$p.txt"); tail -20 "$OUT/forwarded_$p.txt"
        status=1
    fi
done
worker_counters || status=1
{ echo "status $status"; for p in $PROGRAMS; do echo "--- $p native"; cat "$OUT/native_$p.txt";
  echo "--- $p forwarded"; cat "$OUT/forwarded_$p.txt"; done; } > "$OUT/summary.txt"
echo "== $( [ $status -eq 0 ] && echo PASS || echo FAIL ) (summary: $OUT/summary.txt)"
exit $status

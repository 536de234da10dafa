#!/usr/bin/env bash
# Issue 22's proof and benchmarks on the GPU machine: PyTorch (the CUDA 13 wheel, unmodified) run
# natively and as a guest (the GPU hidden, the guest library first on LD_LIBRARY_PATH, against
# `kvmgpu worker --backend cuda` in loopback), its results compared and its speed set side by side.
#
#     OUT=/tmp/torch-gpu bash bench/gpu/torch_gpu.sh [proof|bench|all]
#
# proof: tests/guest/programs/torch_proof.py (a ResNet trained with SGD, a GPT-2-sized transformer
# with fused AdamW in bf16, torch.compile, a CUDA graph replayed) natively, natively again (what the
# GPU's own nondeterminism is, for reading a difference), then forwarded; each forwarded value must
# be within the script's stated tolerance of the native one ($OUT/proof_compare.txt). bench:
# bench/gpu/torch_bench.py, each measurement native then forwarded, the ratios against the issue's
# targets ($OUT/torch_bench.json, the children's logs in $OUT/bench/). About 3 + 4 minutes on an H100.
# Environment: PYTHON (one with torch; default python3), GMEM_GIB (the vGPU's quota, default 40),
# REGION_MIB (default 256), PROOF_ARGS (e.g. "--only resnet,graph"), BENCH_ARGS (e.g. "--only
# gpt,mlp_eager --seconds 5"), BACKEND (sim tries the plumbing without a GPU: every PyTorch kernel
# fails there, so the forwarded runs do). Exits 1 when a forwarded value differs or a run fails, 2
# when it cannot start. The worker's C module (kvmgpu/backend/_launcher*.so) should be built, as
# tests/gpu/run_on_h200.sh builds it (`... run_on_h200.sh torch` does both).
set -u
PART=${1:-all}
case "$PART" in proof|bench|all) ;; *) echo "usage: bash bench/gpu/torch_gpu.sh [proof|bench|all] (not '$PART')"; exit 2;; esac
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/kvmgpu-torch-gpu.XXXXXX)}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
echo "== $(date -u) on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
"$PY" -c "import torch; print('== PyTorch', torch.__version__, 'CUDA', torch.version.cuda)" \
    || { echo "no PyTorch in $PY: PYTHON= names a Python that has it"; exit 2; }
ls "$ROOT"/kvmgpu/backend/_launcher*.so >/dev/null 2>&1 \
    || echo "== (no kvmgpu/backend/_launcher*.so: the worker's driver calls go through cuda-bindings, slower;" \
            "tests/gpu/run_on_h200.sh builds it)"
"$PY" "$ROOT/guest-agent/libcuda/build.py" "$OUT/lib" || { echo "cannot build libcuda.so.1"; exit 2; }
# shellcheck source=bench/gpu/loopback_worker.sh
. "$ROOT/bench/gpu/loopback_worker.sh"
guest_hide
start_worker torch-gpu $((${GMEM_GIB:-40} << 30)) $((${REGION_MIB:-256} << 20))
echo "== worker: backend ${BACKEND:-cuda}, ${GMEM_GIB:-40} GiB, region ${REGION_MIB:-256} MiB; results in $OUT"
GUEST="$HIDE env KVMGPU_SOCKET=$SOCK KVMGPU_SHM=$SHM LD_LIBRARY_PATH=$OUT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} TRITON_LIBCUDA_PATH=$OUT/lib"
status=0

proof() { # NAME CACHE [the guest's prefix]: a run of torch_proof.py, with its own inductor and Triton
          # caches (so that the forwarded run compiles and loads its kernels itself)
    local name=$1 cache=$OUT/cache_$2; shift 2
    local start=$SECONDS
    # shellcheck disable=SC2086 # (PROOF_ARGS: options)
    TORCHINDUCTOR_CACHE_DIR=$cache/inductor TRITON_CACHE_DIR=$cache/triton timeout 600 "$@" \
        "$PY" "$ROOT/tests/guest/programs/torch_proof.py" ${PROOF_ARGS:-} > "$OUT/proof_$name.txt" 2> "$OUT/proof_$name.err"
    echo "proof $name: exit $? in $((SECONDS - start)) s: $(grep -c '^OK' "$OUT/proof_$name.txt") OK," \
         "$(grep -c '^FAIL' "$OUT/proof_$name.txt") FAIL"
    grep '^FAIL' "$OUT/proof_$name.txt"
}
if [ "$PART" != bench ]; then
    proof native native
    proof native_again native  # (its caches warm: the numbers, not the compiler, are what it checks)
    # shellcheck disable=SC2086 # (GUEST is a command prefix)
    proof forwarded forwarded $GUEST
    echo "== the native run against itself (the GPU's own spread, for reading a difference below)"
    "$PY" "$ROOT/tests/guest/programs/torch_proof.py" --compare "$OUT/proof_native.txt" "$OUT/proof_native_again.txt"
    echo "== forwarded against native ($OUT/proof_compare.txt)"
    "$PY" "$ROOT/tests/guest/programs/torch_proof.py" --compare "$OUT/proof_native.txt" "$OUT/proof_forwarded.txt" \
        > "$OUT/proof_compare.txt" || status=1
    cat "$OUT/proof_compare.txt"
    [ $status -eq 0 ] || tail -20 "$OUT/proof_forwarded.err"
fi
if [ "$PART" != proof ]; then
    echo "== benchmarks, native and forwarded side by side"
    # shellcheck disable=SC2086 # (BENCH_ARGS: options)
    KVMGPU_SOCKET=$SOCK KVMGPU_SHM=$SHM timeout 540 "$PY" "$ROOT/bench/gpu/torch_bench.py" --lib "$OUT/lib" \
        --out "$OUT/bench" --json "$OUT/torch_bench.json" ${BENCH_ARGS:-} || status=1
fi
worker_counters || status=1
echo "== $( [ $status -eq 0 ] && echo PASS || echo FAIL ) ($OUT/run.log)"
exit $status

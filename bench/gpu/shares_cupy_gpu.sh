#!/usr/bin/env bash
# Two of the issues' targets on the native guest library, on the GPU machine (repository root):
#
#     OUT=/tmp/r bash bench/gpu/shares_cupy_gpu.sh [shares|cupy|all]
#
# shares: bench/gpu/torch_shares.py, two VMs training PyTorch at compute shares 30/70 on the one
#   GPU, eager and with the 30 % VM replaying a CUDA graph (issue 22: each within +-3 pp in every
#   1 s window), then the same with the driver-API spin step (tests/kernels' `spin`, no PyTorch:
#   what the gate does for the library when PyTorch is not in the way). $OUT/torch_shares/,
#   $OUT/spin_shares/ (torch_shares.json each), logs $OUT/torch_shares.log, $OUT/spin_shares.log.
# cupy: bench/gpu/cupy_bench.py, a CuPy workload of 2680 operations native against forwarded,
#   3 rounds (issue 21: within 5 %). $OUT/cupy_bench/cupy_bench.json, $OUT/cupy_bench.log.
# Both start their workers and hide the GPU from the guests as bench/gpu/libcuda_gpu.sh does
# (bench/gpu/loopback_vms.py). Exit status non-zero when a run failed or missed its target.
# BACKEND=sim tries the plumbing without a GPU (stand-ins: the spin step for PyTorch, numpy for
# CuPy; nothing is judged). SHARES_ARGS / CUPY_ARGS add options (e.g. SHARES_ARGS="--seconds 12").
set -uo pipefail
OUT=${OUT:-/tmp/kvmgpu-shares-cupy}
PY=${PYTHON:-python3}
BACKEND=${BACKEND:-cuda}
part=${1:-all}
case "$part" in shares|cupy|all) ;; *) echo "usage: OUT=DIR bash $0 [shares|cupy|all] (not '$part')" >&2; exit 2;; esac
case "$BACKEND" in cuda|sim) ;; *) echo "BACKEND must be cuda or sim, not '$BACKEND'" >&2; exit 2;; esac
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/guest-agent:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU") \
    | tee "$OUT/gpu.txt"
# the worker's C module (kvmgpu/backend/launcher.c), as tests/gpu/run_on_h200.sh builds it, where it
# is not built yet: without it the worker's driver calls go through cuda-bindings (not what users run)
if [ "$BACKEND" = cuda ] && ! ls kvmgpu/backend/_launcher*.so >/dev/null 2>&1; then
    "$PY" setup.py -q build_ext --inplace >/dev/null 2>&1 \
        || echo "(the worker's C module did not build: its driver calls go through cuda-bindings)"
fi
shares_args="" spin_args="--workload spin" cupy_args=""
if [ "$BACKEND" = sim ]; then
    shares_args="--backend sim --workload spin" spin_args="--backend sim --workload spin --cases eager"
    cupy_args="--backend sim --xp numpy --iters 40 --n 512 --grid 256"
fi
shares_rc=0 cupy_rc=0
if [ "$part" = shares ] || [ "$part" = all ]; then
    # shellcheck disable=SC2086  # (word-split on purpose: options)
    timeout 500 "$PY" bench/gpu/torch_shares.py --out "$OUT/torch_shares" $shares_args ${SHARES_ARGS:-} 2>&1 \
        | tee "$OUT/torch_shares.log"
    shares_rc=$?
    # shellcheck disable=SC2086
    timeout 300 "$PY" bench/gpu/torch_shares.py --out "$OUT/spin_shares" $spin_args ${SHARES_ARGS:-} 2>&1 \
        | tee "$OUT/spin_shares.log" || shares_rc=1
fi
if [ "$part" = cupy ] || [ "$part" = all ]; then
    # shellcheck disable=SC2086
    timeout 400 "$PY" bench/gpu/cupy_bench.py --out "$OUT/cupy_bench" $cupy_args ${CUPY_ARGS:-} 2>&1 \
        | tee "$OUT/cupy_bench.log"
    cupy_rc=$?
fi
rm -rf "$OUT"/torch_shares/lib "$OUT"/spin_shares/lib "$OUT"/cupy_bench/lib  # (built libraries: not results)
echo "shares rc=$shares_rc cupy rc=$cupy_rc"
exit $(( shares_rc || cupy_rc ))

# shellcheck shell=bash disable=SC2034 # (HIDE, SOCK, SHM, WORKER: for the script that sources this)
# Sourced by the GPU runners (libcuda_gpu.sh, torch_gpu.sh), after they set ROOT, OUT and PY: how a
# guest process is run on the GPU machine. `guest_hide` sets HIDE, the command prefix that hides the
# GPU from a process; `start_worker NAME GMEM REGION` starts the loopback worker the guests talk to.

# HIDE: where this shell may, a mount namespace in which every /dev/nvidia* is /dev/null
# (without_gpu.sh: the driver cannot open the GPU, as in a VM, and NVML and PyTorch's device count,
# which reads CUDA_VISIBLE_DEVICES itself, see what the guest library says); else
# CUDA_VISIBLE_DEVICES= (enough for the driver, not for PyTorch's count).
guest_hide() {
    HIDE="env CUDA_VISIBLE_DEVICES="
    if unshare -m true 2>/dev/null; then
        HIDE="unshare -m $ROOT/bench/gpu/without_gpu.sh"
        echo "== the guest processes run without /dev/nvidia* (unshare -m)"
    else
        echo "== the guest processes run with CUDA_VISIBLE_DEVICES= (no unshare -m here)"
    fi
}

# start_worker NAME GMEM REGION (bytes): `kvmgpu worker` as tests/gpu start it (no CLI dependencies
# needed beside cuda-bindings), on $BACKEND (default cuda), vm NAME, its socket $OUT/worker.sock, log
# $OUT/worker.log, counters $OUT/stats.json. Sets SOCK, SHM and WORKER, and an EXIT trap that stops
# it; exits 2 when it does not start.
start_worker() {
    SOCK="$OUT/worker.sock"; SHM="/dev/shm/kvmgpu-$1-$$"
    rm -f "$SOCK"
    PYTHONPATH="$ROOT/guest-agent:$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "import sys
from kvmgpu.worker.server import WorkerConfig, serve
serve(WorkerConfig(backend=sys.argv[1], gmem=int(sys.argv[2]), socket=sys.argv[3], shm=sys.argv[4],
                   region_size=int(sys.argv[5]), vm=sys.argv[6], stats_file=sys.argv[7]))" \
        "${BACKEND:-cuda}" "$2" "$SOCK" "$SHM" "$3" "$1" "$OUT/stats.json" > "$OUT/worker.log" 2>&1 &
    WORKER=$!
    trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null; rm -f "$SHM"' EXIT
    for _ in $(seq 200); do [ -S "$SOCK" ] && break; kill -0 $WORKER 2>/dev/null || break; sleep 0.1; done
    [ -S "$SOCK" ] || { echo "the worker did not start:"; cat "$OUT/worker.log"; exit 2; }
}

# worker_counters: the worker's calls, errors, sessions and memory peak ($OUT/stats.json); fails
# where it wrote none
worker_counters() {
    sleep 2 # (the worker rewrites its counters at most once a second)
    echo "== the worker's counters ($OUT/stats.json)"
    "$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print('calls', json.dumps(s['calls'])); \
print('errors', json.dumps(s['errors'])); print('sessions', s['sessions'], 'memory peak', s['memory']['peak'])" \
        "$OUT/stats.json"
}

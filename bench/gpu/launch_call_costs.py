"""What one cuLaunchKernel costs by each way of calling it, in one process on the GPU: a C loop
over records (kvmgpu's launcher, the same launch 20000 times), the C loop one record a call (what
a run of one costs), and cuda-bindings from Python; then launch + stream synchronise, with and
without the compute meter's two event records around it, by both ways.
Usage (repository root, on a GPU machine, the launcher built): python3 bench/gpu/launch_call_costs.py"""

import ctypes
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "guest-agent"), str(ROOT)]

from cuda.bindings import driver as cu  # noqa: E402

from kvmgpu.backend.launcher import RECORD, LaunchRecords  # noqa: E402

N, M = 20000, 2000


def ok(r):
    assert r[0] == 0, r
    return r[1] if len(r) == 2 else r[1:]


def main() -> None:
    ok(cu.cuInit(0))
    ok(cu.cuCtxSetCurrent(ok(cu.cuDevicePrimaryCtxRetain(ok(cu.cuDeviceGet(0))))))
    ptx = (ROOT / "tests" / "kernels" / "kernels.ptx").read_bytes() + b"\0"
    spin = ok(cu.cuModuleGetFunction(ok(cu.cuModuleLoadData(ptx)), b"spin"))
    arg, size = ctypes.create_string_buffer(8), ctypes.c_size_t(8)
    extra = (ctypes.c_void_p * 5)(1, ctypes.addressof(arg), 2, ctypes.addressof(size), 0)
    ex, null = ctypes.addressof(extra), cu.CUstream(0)
    fn = ok(cu.cuGetProcAddress(b"cuLaunchKernel", ok(cu.cuDriverGetVersion()), 0))[0]
    recs = LaunchRecords(int(fn), capacity=N)
    for i in range(N):
        RECORD.pack_into(recs.records, i * RECORD.size, int(spin), 0, ctypes.addressof(arg), 8, 0,
                         1, 1, 1, 1, 1, 1, 0, 1)
    e1, e2 = ok(cu.cuEventCreate(0)), ok(cu.cuEventCreate(0))

    def timed(body, n):
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            body()
            best = min(best, time.perf_counter() - t)
        return round(best / n * 1e6, 2)

    def c_loop():
        assert recs.launch(0, N) == (N, 0, 0)
        cu.cuCtxSynchronize()

    def c_one_a_call():
        launch = recs.launch
        for _ in range(N):
            launch(0, 1)
        cu.cuCtxSynchronize()

    def bindings():
        for _ in range(N):
            cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, null, 0, ex)
        cu.cuCtxSynchronize()

    def sync(c, events):
        def body():
            for _ in range(M):
                if events:
                    cu.cuEventRecord(e1, null)
                if c:
                    recs.launch(0, 1)
                else:
                    cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, null, 0, ex)
                if events:
                    cu.cuEventRecord(e2, null)
                cu.cuStreamSynchronize(null)
        return body

    for rnd in range(3):
        print(f"round {rnd}: µs a launch, best of 5 --",
              "C loop", timed(c_loop, N), "| C, one a call", timed(c_one_a_call, N),
              "| cuda-bindings", timed(bindings, N), "|| launch + sync: C", timed(sync(True, False), M),
              "bindings", timed(sync(False, False), M), "| with two event records: C",
              timed(sync(True, True), M), "bindings", timed(sync(False, True), M))


if __name__ == "__main__":
    main()

"""What single driver calls cost from Python on this machine, in the worker's own forms: CUDA
event records and elapsed-time reads (cuda-bindings against a ctypes call of libcuda), launch forms
(CUfunction/CUstream objects against plain ints, ctypes with and without releasing the GIL), and
a launch + synchronise round trip with 0, 1 or 2 timing events recorded on the null stream (what
the compute gate's meter adds per run, GPU side included).
Usage (repository root, on a GPU machine): python3 bench/gpu/call_costs.py [--json FILE]"""

import ctypes
import json
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "guest-agent"), str(ROOT)]


def per_call(fn, n, reps=5):
    fn(max(1, n // 10))
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn(n)
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return round(best, 3)


def main() -> dict:
    from cuda.bindings import driver as cu

    from kvmgpu.backend.cuda import CudaBackend
    out: dict = {}
    b = CudaBackend(0)
    f, _ = b.module_get_function(b.module_load((ROOT / "tests/kernels/kernels.ptx").read_bytes()), "spin")
    args = struct.pack("<q", 0)
    null = b.null_stream
    lib, plib = ctypes.CDLL("libcuda.so.1"), ctypes.PyDLL("libcuda.so.1")
    V, U = ctypes.c_void_p, ctypes.c_uint
    fns = {}
    for tag, L in (("cdll", lib), ("pydll", plib)):
        rec = L.cuEventRecord
        rec.argtypes, rec.restype = [V, V], ctypes.c_int
        el = L.cuEventElapsedTime_v2 if hasattr(L, "cuEventElapsedTime_v2") else L.cuEventElapsedTime
        el.argtypes, el.restype = [V, V, V], ctypes.c_int
        ss = L.cuStreamSynchronize
        ss.argtypes, ss.restype = [V], ctypes.c_int
        la = L.cuLaunchKernel
        la.argtypes = [V, U, U, U, U, U, U, U, V, V, V]
        la.restype = ctypes.c_int
        fns[tag] = (rec, el, ss, la)
    e0, e1 = b.event_create(0), b.event_create(0)
    i0, i1 = int(e0), int(e1)

    def m(name, fn, n):
        try:
            out[name] = per_call(fn, n)
        except Exception as e:  # noqa: BLE001 - a form the binding refuses: say so
            out[name] = f"error: {type(e).__name__}: {e}"

    def rec_b(n):
        for _ in range(n):
            cu.cuEventRecord(e0, null)
    m("event_record_bindings_us", rec_b, 20000)

    def rec_b_int(n):
        for _ in range(n):
            cu.cuEventRecord(i0, 0)
    m("event_record_bindings_int_us", rec_b_int, 20000)
    for tag in fns:
        rec = fns[tag][0]

        def rec_c(n, rec=rec):
            for _ in range(n):
                rec(i0, None)
        m(f"event_record_{tag}_us", rec_c, 20000)
    b.synchronize()
    cu.cuEventRecord(e0, null)
    cu.cuEventRecord(e1, null)
    b.synchronize()

    def el_b(n):
        for _ in range(n):
            cu.cuEventElapsedTime(e0, e1)
    m("event_elapsed_bindings_us", el_b, 20000)
    fl = ctypes.c_float()
    pf = ctypes.addressof(fl)
    for tag in fns:
        el = fns[tag][1]

        def el_c(n, el=el):
            for _ in range(n):
                el(pf, i0, i1)
        m(f"event_elapsed_{tag}_us", el_c, 20000)

    # queued launch forms
    h, hi, ex = f.handle, int(f.handle), f.extra

    def la_obj(n):
        for _ in range(n):
            f._mv[:8] = args
            cu.cuLaunchKernel(h, 1, 1, 1, 1, 1, 1, 0, null, 0, ex)
        b.synchronize()
    m("launch_bindings_objects_us", la_obj, 20000)

    def la_int(n):
        for _ in range(n):
            f._mv[:8] = args
            cu.cuLaunchKernel(hi, 1, 1, 1, 1, 1, 1, 0, 0, 0, ex)
        b.synchronize()
    m("launch_bindings_ints_us", la_int, 20000)

    def la_backend(n):
        for _ in range(n):
            b.launch(f, (1, 1, 1), (1, 1, 1), 0, None, args)
        b.synchronize()
    m("launch_backend_extra_us", la_backend, 20000)
    for tag in fns:
        la = fns[tag][3]

        def la_c(n, la=la):
            for _ in range(n):
                f._mv[:8] = args
                la(hi, 1, 1, 1, 1, 1, 1, 0, None, None, ex)
            b.synchronize()
        m(f"launch_{tag}_us", la_c, 20000)

    # launch + sync: the gate's events (0, 1, 2 records on the null stream), bindings or ctypes
    rec_c = fns["cdll"][0]
    ss_c = fns["cdll"][2]

    def ls(nrec, how):
        def run(n):
            for _ in range(n):
                if nrec == 2:
                    if how == "b":
                        cu.cuEventRecord(e0, null)
                    else:
                        rec_c(i0, None)
                b.launch(f, (1, 1, 1), (1, 1, 1), 0, None, args)
                if nrec:
                    if how == "b":
                        cu.cuEventRecord(e1, null)
                    else:
                        rec_c(i1, None)
                if how == "b":
                    cu.cuStreamSynchronize(null)
                else:
                    ss_c(None)
        return run
    for nrec in (0, 1, 2):
        for how in ("b", "c"):
            m(f"launch_sync_{nrec}ev_{'bindings' if how == 'b' else 'cdll'}_us", ls(nrec, how), 3000)

    def ls_ctx(n):
        for _ in range(n):
            b.launch(f, (1, 1, 1), (1, 1, 1), 0, None, args)
            cu.cuCtxSynchronize()
    m("launch_ctxsync_bindings_us", ls_ctx, 3000)

    # the real meter over this backend: before_launch/work, synchronizing/mark_idle, finish per 250
    from kvmgpu.compute.meter import EventMeter
    meter = EventMeter(b)
    meter.begin()

    def ls_meter(n):
        for i in range(n):
            meter.work()
            b.launch(f, (1, 1, 1), (1, 1, 1), 0, None, args)
            meter.mark_idle()
            b.stream_synchronize(None)
            if i % 250 == 249:
                meter.finish()
                meter.begin()
    m("launch_sync_meter_us", ls_meter, 3000)
    meter.close()
    b.close()
    return out


if __name__ == "__main__":
    r = main()
    print(json.dumps(r, indent=1))
    if sys.argv[1:2] == ["--json"]:
        Path(sys.argv[2]).write_text(json.dumps(r, indent=1))

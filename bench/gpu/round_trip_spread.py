"""Launch + cuStreamSynchronize round trips as benchgpu's launch_sync makes them (native and
forwarded in one process, one loopback worker with its gate), timed one by one: mean, p10, p50,
p90, p99 and max per side, the kernel's parameters passed as the address of a void*[] (benchgpu's
way) and as (values, types); benchgpu's own figure (best of 5 means); then the same with
KVMGPU_TRACE and each phase's distribution, and once more plain: each case has its own worker, so
the spread between cases is the spread between workers (where the scheduler put them). Run on the
GPU machine from the repository root:
`PYTHONPATH=guest-agent:. python3 bench/gpu/round_trip_spread.py`"""
import ctypes
import os
import sys
import tempfile
import time

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

ok = B._ok
ns = time.perf_counter_ns


def stats(ts):
    ts = sorted(x / 1000 for x in ts)
    n = len(ts)
    return (f"mean {sum(ts)/n:6.1f} p10 {ts[n//10]:6.1f} p50 {ts[n//2]:6.1f} p90 {ts[n*9//10]:6.1f} "
            f"p99 {ts[n*99//100]:6.1f} max {ts[-1]:7.1f}")


def loop(cu, spin, kp, n=2000):
    ts = []
    for _ in range(n):
        t = ns()
        cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, 0, kp, 0)
        cu.cuStreamSynchronize(0)
        ts.append(ns() - t)
    return ts


def child(label):
    from cuda.bindings import driver as nat
    ok(nat.cuInit(0))
    native = B.Workloads(nat, [1 << 20])
    from kvmgpu_guest import driver as fwd
    ok(fwd.cuInit(0))
    forwarded = B.Workloads(fwd, [1 << 20])
    tup = ((0,), (ctypes.c_longlong,))
    res = {}
    for rnd in range(3):
        for side, w in (("native", native), ("fwd-addr", forwarded), ("fwd-tuple", forwarded)):
            w.current()
            kp = tup if side == "fwd-tuple" else w.kp
            loop(w.cu, w.spin, kp, 200)
            ts = loop(w.cu, w.spin, kp)
            res.setdefault(side, []).extend(ts)
            print(f"{label} round {rnd} {side:10} {stats(ts)}", flush=True)
    for side, ts in res.items():
        print(f"{label} ALL {side:10} {stats(ts)}")
    # benchgpu's own figure, best of 5 means
    for side, w in (("native", native), ("forwarded", forwarded)):
        w.current()
        fn = [fn for f, fn, _ in w.figures() if f == "launch_sync_us"][0]
        fn()
        print(f"{label} benchgpu-style {side}: best of 5 = {min(fn() for _ in range(5)) / 2000 * 1e6:.1f} us")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(sys.argv[1]); sys.exit(0)
    for label, env in (("plain", {}), ("traced", {"KVMGPU_TRACE": "T"}), ("plain2", {})):
        if "KVMGPU_TRACE" in env:
            env = {"KVMGPU_TRACE": os.path.join(tempfile.mkdtemp(), "trace")}
        B.run_guest([__file__, label], env)
        if "KVMGPU_TRACE" in env:
            from kvmgpu_wire import trace
            every = trace.calls(trace.load(env["KVMGPU_TRACE"]))
            from kvmgpu_wire.protocol import Op
            cs = [c for c in every if c["op"] == str(int(Op.STREAM_SYNCHRONIZE))]
            print(f"traced STREAM_SYNCHRONIZE calls: {len(cs)}")
            for a, b, what in trace.PHASES:
                v = [(c[b] - c[a]) for c in cs if a in c and b in c and c[b] >= c[a]]
                if v:
                    print(f"  {a}->{b} {stats(v)}  {what}")

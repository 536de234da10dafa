"""Timeline of a forwarded 4 MiB DtoH (MEMCPY_DTOH_PIECES) in the guest: when each piece was seen
landed (seenK), when its copy out of the window finished (doneK), when the reply came, in µs
from the call; alone and after 100 stencil launches (the launch-bound stencil's copy out), the
five runs around the median of 20. The guest's part copier (client._Copier) is replaced by one
that does the same and notes the times; with the C copier (kvmgpu_guest._copier), its `part` is
wrapped instead (seenK: a part from piece K seen landed, doneK: copied out up to piece K). Run on
the GPU machine from the repository root:
`PYTHONPATH=guest-agent:. python3 bench/gpu/dtoh_timeline.py`"""
import ctypes
import sys
import time

import numpy as np

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

ok = B._ok
P, I32 = ctypes.c_void_p, ctypes.c_int
N4 = 4 << 20
ns = time.perf_counter_ns

def run(mode):
    from kvmgpu_guest import client, driver as cu
    ev = []
    T0 = [0]
    def mm(d, s, n, k):
        ctypes.memmove(d, s, n); ev.append(("done", k, ns() - T0[0]))
    def part(self, pos, n, last=False):
        ev.append(("seen", pos >> 20, ns() - T0[0]))
        d, s = self.d + pos, self.s + self.base + pos
        step = self.copies.part
        end = n if not last else max(0, n - step)
        if end:
            pool = client._get_pool(self.copies.piece_threads - 1)
            self.futures += [(pool.submit(mm, d + i, s + i, min(step, end - i), (pos + i) >> 20), None)
                             for i in range(0, end, step)]
        if end < n:
            mm(d + end, s + end, n - end, (pos + end) >> 20)
    plain = client._Copier.part

    def timed_part(self, pos, n, last=False):
        ev.append(("seen", pos >> 20, ns() - T0[0]))
        plain(self, pos, n, last)
        ev.append(("done", (pos + n - 1) >> 20, ns() - T0[0]))
    client._Copier.part = lambda self, *a: (timed_part if self.split else part)(self, *a)
    orig_wait = client.Session._wait
    def wait(self, seq, op):
        r = orig_wait(self, seq, op); ev.append(("reply", 0, ns() - T0[0])); return r
    client.Session._wait = wait
    ok(cu.cuInit(0)); ok(cu.cuCtxCreate(0, ok(cu.cuDeviceGet(0))))
    mod = ok(cu.cuModuleLoadData(B.PTX.read_bytes()))
    st = ok(cu.cuModuleGetFunction(mod, b"stencil1d"))
    n = 1 << 20
    ab = [int(ok(cu.cuMemAlloc(4 * n))), int(ok(cu.cuMemAlloc(4 * n)))]
    y = np.ones(N4, np.uint8)
    rows = []
    for rep in range(25):
        if mode == "stencil":
            for _ in range(100):
                cu.cuLaunchKernel(st, n // 256, 1, 1, 256, 1, 1, 0, 0, ((ab[0], ab[1], n), (P, P, I32)), 0)
                ab.reverse()
        ev.clear()
        T0[0] = ns()
        ok(cu.cuMemcpyDtoH(y.ctypes.data, ab[0], N4))
        total = ns() - T0[0]
        if rep >= 5:
            rows.append((total, list(ev)))
    rows.sort(key=lambda r: r[0])
    for total, e in rows[len(rows) // 2 - 2: len(rows) // 2 + 3]:
        print(mode, "total", round(total / 1e3), "µs:", " ".join(f"{k}{p}@{t/1e3:.0f}" for k, p, t in e))

if __name__ == "__main__":
    if len(sys.argv) > 1:
        run(sys.argv[1]); sys.exit(0)
    for mode in ("alone", "stencil"):
        B.run_guest([__file__, mode])

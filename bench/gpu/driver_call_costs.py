"""The driver calls of a forwarded launch + synchronise, side by side in one process: a launch and
a cuStreamSynchronize through cuda-bindings and through kvmgpu's C module (kvmgpu/backend/
launcher.c), what a synchronise costs when the kernel has had 0-20 µs to finish (and a poll with
cuStreamQuery instead), and launch + sync both ways. Run on the GPU machine from the repository
root after building the module (`python3 setup.py build_ext --inplace`):
`PYTHONPATH=guest-agent:. python3 bench/gpu/driver_call_costs.py`"""
import ctypes
import sys
import time

sys.path[:0] = ["guest-agent", "."]
from cuda.bindings import driver as cu

from kvmgpu import benchgpu as B
from kvmgpu.backend import launcher

ok = B._ok
ok(cu.cuInit(0))
dev = ok(cu.cuDeviceGet(0))
ok(cu.cuCtxSetCurrent(ok(cu.cuDevicePrimaryCtxRetain(dev))))
spin = ok(cu.cuModuleGetFunction(ok(cu.cuModuleLoadData(B.PTX.read_bytes())), b"spin"))
ver = ok(cu.cuDriverGetVersion())
addr = lambda n: int(ok(cu.cuGetProcAddress(n, ver, 0))[0])
LF, SF, QF = addr(b"cuLaunchKernel"), addr(b"cuStreamSynchronize"), addr(b"cuStreamQuery")
C = launcher.load()
buf = bytearray(64)
size = ctypes.c_size_t(8)
hb = ctypes.c_char.from_buffer(buf)
extra = (ctypes.c_void_p * 5)(1, ctypes.addressof(hb), 2, ctypes.addressof(size), 0)
ex = ctypes.addressof(extra)
fa = int(spin)
null = cu.CUstream(0)
ns = time.perf_counter_ns


def busy(us):
    t = ns() + us * 1000
    while ns() < t:
        pass


def med(f, n=3000):
    f()
    v = []
    for _ in range(n):
        v.append(f())
    v.sort()
    return f"p50 {v[n // 2] / 1000:5.2f} p10 {v[n // 10] / 1000:5.2f} mean {sum(v) / n / 1000:5.2f}"


def t_launch_cb():
    t = ns(); cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, null, 0, ex); d = ns() - t
    cu.cuStreamSynchronize(null); return d


def t_launch_c():
    t = ns(); C.launch(LF, fa, 1, 1, 1, 1, 1, 1, 0, None, buf, 0, 8); d = ns() - t
    cu.cuStreamSynchronize(null); return d


def t_sync_cb_after(us):
    def f():
        cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, null, 0, ex); busy(us)
        t = ns(); cu.cuStreamSynchronize(null); return ns() - t
    return f


def t_sync_c_after(us):
    def f():
        cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, null, 0, ex); busy(us)
        t = ns(); C.stream_synchronize(SF, None); return ns() - t
    return f


def t_query_after(us):
    def f():
        cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, null, 0, ex); busy(us)
        t = ns()
        while cu.cuStreamQuery(null)[0]:
            pass
        return ns() - t
    return f


def t_ls_cb():
    t = ns(); cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, null, 0, ex); cu.cuStreamSynchronize(null); return ns() - t


def t_ls_c():
    t = ns(); C.launch(LF, fa, 1, 1, 1, 1, 1, 1, 0, None, buf, 0, 8); C.stream_synchronize(SF, None); return ns() - t


def t_ls_c_gap(us):
    def f():
        t = ns(); C.launch(LF, fa, 1, 1, 1, 1, 1, 1, 0, None, buf, 0, 8); busy(us)
        C.stream_synchronize(SF, None); return ns() - t
    return f


for rnd in range(2):
    print("round", rnd)
    print(" launch alone, cuda-bindings  ", med(t_launch_cb))
    print(" launch alone, C module       ", med(t_launch_c))
    for us in (0, 3, 6, 10, 20):
        print(f" sync {us:2d} us after launch, cb  ", med(t_sync_cb_after(us)))
        print(f" sync {us:2d} us after launch, C   ", med(t_sync_c_after(us)))
        print(f" query-poll {us:2d} us after launch ", med(t_query_after(us)))
    print(" launch+sync cuda-bindings    ", med(t_ls_cb))
    print(" launch+sync C module         ", med(t_ls_c))
    for us in (5, 10):
        print(f" launch, {us} us gap, sync (C)  ", med(t_ls_c_gap(us)))

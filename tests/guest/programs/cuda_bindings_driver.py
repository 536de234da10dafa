"""NVIDIA's cuda-bindings (from PyPI, not kvmgpu's shim) on libcuda.so.1: contexts, memory,
copies, the quota, a module load. Run by tests/guest/test_cudart.py with the library first on
LD_LIBRARY_PATH; prints OK lines, then DONE."""

import array
import sys

from cuda.bindings import driver as cu

assert not cu.__name__.startswith("kvmgpu"), "this is kvmgpu's shim, not NVIDIA's cuda-bindings"


def ok(r):
    assert r[0] == cu.CUresult.CUDA_SUCCESS, r
    return r[1] if len(r) == 2 else r[1:]


ok(cu.cuInit(0))
dev = ok(cu.cuDeviceGet(0))
name = ok(cu.cuDeviceGetName(64, dev)).split(b"\0")[0].decode()
print(f"OK device {name} total={ok(cu.cuDeviceTotalMem(dev))}")
ctx = ok(cu.cuDevicePrimaryCtxRetain(dev))
ok(cu.cuCtxSetCurrent(ctx))
free, total = ok(cu.cuMemGetInfo())
p = ok(cu.cuMemAlloc(1 << 20))
a = array.array("f", range(1024))
ok(cu.cuMemcpyHtoD(p, a, 4096))
b = array.array("f", [0] * 1024)
ok(cu.cuMemcpyDtoH(b, p, 4096))
print("OK round trip" if a == b else "FAIL round trip")
err, _ = cu.cuMemAlloc(total + 1)
print(f"{'OK' if err == cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY else 'FAIL'} past the quota: {err.name}")
module = ok(cu.cuModuleLoadData(open(sys.argv[1], "rb").read() + b"\0"))
ok(cu.cuModuleGetFunction(module, b"vector_add"))
print("OK module and function")
ok(cu.cuMemFree(p))
ok(cu.cuModuleUnload(module))
print("DONE")

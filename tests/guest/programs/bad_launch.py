"""Launches that cannot run. One the host refuses (a block of 2048 threads): the launch is queued
and returns, cuCtxSynchronize reports its error, once. One with the wrong number of arguments: the
guest's library knows the kernel's parameters, so the launch itself fails (natively the driver
would read past the arguments)."""

import ctypes
import sys

from cuda.bindings import driver as cuda

cuda.cuInit(0)
_, dev = cuda.cuDeviceGet(0)
_, ctx = cuda.cuCtxCreate(0, dev)
_, mod = cuda.cuModuleLoadData(open(sys.argv[1], "rb").read())
_, fn = cuda.cuModuleGetFunction(mod, b"vector_add")
_, d = cuda.cuMemAlloc(64)
args = ((d, d, d, 16), (None, None, None, ctypes.c_int))
launch = cuda.cuLaunchKernel(fn, 1, 1, 1, 2048, 1, 1, 0, 0, args, 0)
sync = cuda.cuCtxSynchronize()
again = cuda.cuCtxSynchronize()
short = cuda.cuLaunchKernel(fn, 1, 1, 1, 16, 1, 1, 0, 0, ((d, 16), (None, ctypes.c_int)), 0)
print(*[cuda.cuGetErrorName(r[0])[1].decode() for r in (launch, sync, again, short, cuda.cuCtxSynchronize())])

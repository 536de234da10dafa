"""A launch with the wrong number of arguments: the launch returns, cuCtxSynchronize reports it."""

import ctypes
import sys

from cuda.bindings import driver as cuda

cuda.cuInit(0)
_, dev = cuda.cuDeviceGet(0)
_, ctx = cuda.cuCtxCreate(0, dev)
_, mod = cuda.cuModuleLoadData(open(sys.argv[1], "rb").read())
_, fn = cuda.cuModuleGetFunction(mod, b"vector_add")
_, d = cuda.cuMemAlloc(64)
launch = cuda.cuLaunchKernel(fn, 1, 1, 1, 16, 1, 1, 0, 0, ((d, 16), (None, ctypes.c_int)), 0)
sync = cuda.cuCtxSynchronize()
again = cuda.cuCtxSynchronize()
print(cuda.cuGetErrorName(launch[0])[1].decode(), cuda.cuGetErrorName(sync[0])[1].decode(),
      cuda.cuGetErrorName(again[0])[1].decode())

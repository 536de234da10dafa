"""cuMemGetInfo reports the quota; an allocation past it is CUDA_ERROR_OUT_OF_MEMORY."""

import json
import sys

from cuda.bindings import driver as cuda

cuda.cuInit(0)
err, dev = cuda.cuDeviceGet(0)
err, ctx = cuda.cuDevicePrimaryCtxRetain(dev)
cuda.cuCtxSetCurrent(ctx)
_, free, total = cuda.cuMemGetInfo()
_, total_mem = cuda.cuDeviceTotalMem(dev)
err_big, _ = cuda.cuMemAlloc(total + 1)
err_ok, ptr = cuda.cuMemAlloc(total // 2)
_, free_after, _ = cuda.cuMemGetInfo()
err_second, _ = cuda.cuMemAlloc(total // 2 + 4096)
print(json.dumps({"free": free, "total": total, "total_mem": total_mem, "big": cuda.cuGetErrorName(err_big)[1].decode(),
                  "ok": int(err_ok), "free_after": free_after, "second": cuda.cuGetErrorName(err_second)[1].decode()}))
sys.exit(0)

"""A guest process that holds device memory through libcuda.so.1 (found by the loader), as a
training job would, while another process looks at the vGPU. Reads commands on stdin, answers
one line each: `alloc BYTES`, `free`, `quit`. Prints `ready PID` once the context is current."""

import ctypes
import sys

cuda = ctypes.CDLL("libcuda.so.1")


def check(what, rc):
    if rc != 0:
        print(f"error {what} {rc}", flush=True)
        sys.exit(1)


check("cuInit", cuda.cuInit(0))
ctx = ctypes.c_void_p()
check("cuDevicePrimaryCtxRetain", cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0))
check("cuCtxSetCurrent", cuda.cuCtxSetCurrent(ctx))
import os  # noqa: E402

print(f"ready {os.getpid()}", flush=True)
held = []
for line in sys.stdin:
    words = line.split()
    if words[0] == "alloc":
        ptr = ctypes.c_uint64()
        check("cuMemAlloc_v2", cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(int(words[1]))))
        held.append(ptr.value)
    elif words[0] == "free":
        for ptr in held:
            check("cuMemFree_v2", cuda.cuMemFree_v2(ctypes.c_uint64(ptr)))
        held.clear()
        check("cuCtxSynchronize", cuda.cuCtxSynchronize())  # the frees are queued: make them land
    elif words[0] == "quit":
        break
    print("done", flush=True)

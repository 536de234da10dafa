"""An unmodified cuda-python driver-API program: vector_add and saxpy, every kernelParams form.

Run as `kvmgpu-guest run -- python vector_add.py KERNELS.ptx`. Prints OK lines; exits non-zero
on the first wrong value or failed call.
"""

import array
import ctypes
import sys

from cuda.bindings import driver as cuda


def check(result):
    err = result[0]
    if err != cuda.CUresult.CUDA_SUCCESS:
        raise SystemExit(f"CUDA error {cuda.cuGetErrorName(err)[1].decode()}")
    return result[1] if len(result) == 2 else result[1:]


def main(ptx_path):
    check(cuda.cuInit(0))
    dev = check(cuda.cuDeviceGet(0))
    ctx = check(cuda.cuCtxCreate(0, dev))
    with open(ptx_path, "rb") as f:
        ptx = f.read()
    module = check(cuda.cuModuleLoadData(ptx))
    vector_add = check(cuda.cuModuleGetFunction(module, b"vector_add"))
    saxpy = check(cuda.cuModuleGetFunction(module, b"saxpy"))
    stream = check(cuda.cuStreamCreate(0))

    n = 4096
    nbytes = 4 * n
    a = array.array("f", [float(i) for i in range(n)])
    b = array.array("f", [2.0 * i for i in range(n)])
    da = check(cuda.cuMemAlloc(nbytes))
    db = check(cuda.cuMemAlloc(nbytes))
    dc = check(cuda.cuMemAlloc(nbytes))
    check(cuda.cuMemcpyHtoD(da, a, nbytes))
    check(cuda.cuMemcpyHtoDAsync(db, b, nbytes, stream))
    check(cuda.cuStreamSynchronize(stream))
    block, grid = 256, (n + 255) // 256

    def result():
        c = array.array("f", [0.0]) * n
        check(cuda.cuMemsetD32(dc, 0, n))
        return c

    def expect(c, want, form):
        bad = [i for i in range(n) if abs(c[i] - want(i)) > 1e-3]
        if bad:
            raise SystemExit(f"{form}: c[{bad[0]}] = {c[bad[0]]}, want {want(bad[0])}")
        print(f"OK {form}")

    # 1. (values, types) with None for cuda-python objects
    c = result()
    check(cuda.cuLaunchKernel(vector_add, grid, 1, 1, block, 1, 1, 0, stream,
                              ((da, db, dc, n), (None, None, None, ctypes.c_int)), 0))
    check(cuda.cuMemcpyDtoHAsync(c, dc, nbytes, stream))
    expect(c, lambda i: 3.0 * i, "tuple form")

    # 2. an int address of a void*[] (as cuda-python's samples build it)
    c = result()
    n_c = ctypes.c_int(n)
    ptrs = (ctypes.c_void_p * 4)(da.getPtr(), db.getPtr(), dc.getPtr(), ctypes.addressof(n_c))
    check(cuda.cuLaunchKernel(vector_add, grid, 1, 1, block, 1, 1, 0, 0, ctypes.addressof(ptrs), 0))
    check(cuda.cuCtxSynchronize())
    check(cuda.cuMemcpyDtoH(c, dc, nbytes))
    expect(c, lambda i: 3.0 * i, "void** address form")

    # 3. a buffer holding the void*[] (a numpy array of addresses in the samples)
    c = result()
    buf = array.array("Q", [da.getPtr(), db.getPtr(), dc.getPtr(), ctypes.addressof(n_c)])
    check(cuda.cuLaunchKernel(vector_add, grid, 1, 1, block, 1, 1, 0, 0, buf, 0))
    address = ctypes.addressof((ctypes.c_char * nbytes).from_buffer(c))  # a plain int address
    check(cuda.cuMemcpyDtoH(address, dc, nbytes))
    expect(c, lambda i: 3.0 * i, "buffer form")

    # 4. `extra` with CU_LAUNCH_PARAM_BUFFER_POINTER / SIZE
    c = result()

    class Args(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint64), ("b", ctypes.c_uint64), ("c", ctypes.c_uint64), ("n", ctypes.c_int)]

    packed = Args(int(da), int(db), int(dc), n)
    size = ctypes.c_size_t(24 + 4)
    extra = (ctypes.c_void_p * 5)(cuda.CU_LAUNCH_PARAM_BUFFER_POINTER, ctypes.addressof(packed),
                                  cuda.CU_LAUNCH_PARAM_BUFFER_SIZE, ctypes.addressof(size),
                                  cuda.CU_LAUNCH_PARAM_END)
    check(cuda.cuLaunchKernel(vector_add, grid, 1, 1, block, 1, 1, 0, 0, None, ctypes.addressof(extra)))
    check(cuda.cuMemcpyDtoH(c, dc, nbytes))
    expect(c, lambda i: 3.0 * i, "extra form")

    # saxpy: y = a*x + y, with a float scalar
    y = array.array("f", [1.0]) * n
    dy = check(cuda.cuMemAlloc(nbytes))
    check(cuda.cuMemcpyHtoD(dy, y, nbytes))
    check(cuda.cuLaunchKernel(saxpy, grid, 1, 1, block, 1, 1, 0, 0,
                              ((2.5, da, dy, n), (ctypes.c_float, None, None, ctypes.c_int)), 0))
    out = array.array("f", [0.0]) * n
    check(cuda.cuMemcpyDtoH(out, dy, nbytes))
    c = out
    expect(c, lambda i: 2.5 * i + 1.0, "saxpy")

    # events around a launch
    start, end = check(cuda.cuEventCreate(0)), check(cuda.cuEventCreate(0))
    check(cuda.cuEventRecord(start, stream))
    check(cuda.cuLaunchKernel(vector_add, grid, 1, 1, block, 1, 1, 0, stream,
                              ((da, db, dc, n), (None, None, None, ctypes.c_int)), 0))
    check(cuda.cuEventRecord(end, stream))
    check(cuda.cuEventSynchronize(end))
    ms = check(cuda.cuEventElapsedTime(start, end))
    if not ms >= 0.0:
        raise SystemExit(f"elapsed time {ms}")
    print("OK events")

    for d in (da, db, dc, dy):
        check(cuda.cuMemFree(d))
    for e in (start, end):
        check(cuda.cuEventDestroy(e))
    check(cuda.cuStreamDestroy(stream))
    check(cuda.cuModuleUnload(module))
    check(cuda.cuCtxSynchronize())
    check(cuda.cuCtxDestroy(ctx))
    print("DONE")


if __name__ == "__main__":
    main(sys.argv[1])

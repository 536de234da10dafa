"""A sample CUDA driver-API program (cuda-python style) for a kvmgpu vGPU.

    kvmgpu-guest run -- python3 vector_demo.py [KERNELS.ptx] [N]

KERNELS.ptx defaults to the sample kernels the guest agent carries (kvmgpu_guest/kernels.ptx,
built from tests/kernels/kernels.cu).

1. vector_add on N random floats (default 65536), the result checked against the sum computed here;
2. an allocation that takes this process past the vGPU's memory quota, which must be refused with
   CUDA_ERROR_OUT_OF_MEMORY (the quota is the VM's, whichever process allocates).

Unmodified cuda-python code: with the real driver it runs on a GPU too. Prints one clear line per
step and `vector_demo: PASS` at the end; exits 1 on the first failure.
"""

import array
import ctypes
import os
import random
import sys

from cuda.bindings import driver as cuda

MIB = 1 << 20
TAG = f"vector_demo[{os.getpid()}]"


def name(err) -> str:
    return cuda.cuGetErrorName(err)[1].decode()


def check(result, what: str):
    err = result[0]
    if err != cuda.CUresult.CUDA_SUCCESS:
        print(f"{TAG}: FAIL {what}: {name(err)}", flush=True)
        raise SystemExit(1)
    return result[1] if len(result) == 2 else result[1:]


def main(ptx_path: str, n: int) -> None:
    check(cuda.cuInit(0), "cuInit")
    dev = check(cuda.cuDeviceGet(0), "cuDeviceGet")
    dev_name = check(cuda.cuDeviceGetName(64, dev), "cuDeviceGetName").split(b"\0", 1)[0].decode()
    ctx = check(cuda.cuCtxCreate(0, dev), "cuCtxCreate")
    free, total = check(cuda.cuMemGetInfo(), "cuMemGetInfo")
    print(f"{TAG}: device {dev_name}, quota {total // MIB} MiB, {free // MIB} MiB free", flush=True)

    with open(ptx_path, "rb") as f:
        module = check(cuda.cuModuleLoadData(f.read()), "cuModuleLoadData")
    vector_add = check(cuda.cuModuleGetFunction(module, b"vector_add"), "cuModuleGetFunction")

    # 1. vector_add on random data, checked here
    rng = random.Random()
    a = array.array("f", (rng.uniform(-1000.0, 1000.0) for _ in range(n)))
    b = array.array("f", (rng.uniform(-1000.0, 1000.0) for _ in range(n)))
    nbytes = 4 * n
    da = check(cuda.cuMemAlloc(nbytes), "cuMemAlloc a")
    db = check(cuda.cuMemAlloc(nbytes), "cuMemAlloc b")
    dc = check(cuda.cuMemAlloc(nbytes), "cuMemAlloc c")
    check(cuda.cuMemcpyHtoD(da, a, nbytes), "cuMemcpyHtoD a")
    check(cuda.cuMemcpyHtoD(db, b, nbytes), "cuMemcpyHtoD b")
    block = 256
    grid = (n + block - 1) // block
    check(cuda.cuLaunchKernel(vector_add, grid, 1, 1, block, 1, 1, 0, 0,
                              ((da, db, dc, n), (None, None, None, ctypes.c_int)), 0), "cuLaunchKernel")
    check(cuda.cuCtxSynchronize(), "cuCtxSynchronize")
    c = array.array("f", bytes(nbytes))
    check(cuda.cuMemcpyDtoH(c, dc, nbytes), "cuMemcpyDtoH c")
    # the expected sum in float32, as the kernel computes it
    want = array.array("f", (x + y for x, y in zip(a, b)))
    bad = [i for i in range(n) if c[i] != want[i]]
    if bad:
        i = bad[0]
        print(f"{TAG}: FAIL vector_add: {len(bad)} of {n} wrong, c[{i}] = {c[i]}, want {want[i]}", flush=True)
        raise SystemExit(1)
    print(f"{TAG}: vector_add of {n} random floats: result checked OK", flush=True)

    # 2. past the quota: this process holds 3 * nbytes; ask for what would take it past the quota
    #    even if no other process of the VM held anything
    held = 3 * nbytes
    over = total - held + MIB
    err, ptr = cuda.cuMemAlloc(over)
    if err == cuda.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
        print(f"{TAG}: allocation of {over // MIB} MiB past the {total // MIB} MiB quota: "
              f"{name(err)} (refused, as it must be)", flush=True)
    else:
        if err == cuda.CUresult.CUDA_SUCCESS:
            cuda.cuMemFree(ptr)
        print(f"{TAG}: FAIL allocation of {over // MIB} MiB past the {total // MIB} MiB quota "
              f"returned {name(err)}, want CUDA_ERROR_OUT_OF_MEMORY", flush=True)
        raise SystemExit(1)

    for d in (da, db, dc):
        check(cuda.cuMemFree(d), "cuMemFree")
    check(cuda.cuModuleUnload(module), "cuModuleUnload")
    check(cuda.cuCtxDestroy(ctx), "cuCtxDestroy")
    print(f"{TAG}: PASS", flush=True)


def sample_kernels() -> str:
    """The PTX the guest agent's package carries (found where kvmgpu_guest is installed)."""
    from importlib import resources
    return str(resources.files("kvmgpu_guest").joinpath("kernels.ptx"))


if __name__ == "__main__":
    args = sys.argv[1:]
    ptx = args.pop(0) if args and not args[0].isdigit() else sample_kernels()
    if len(args) > 1 or (args and not args[0].isdigit()) or ptx in ("-h", "--help"):
        raise SystemExit("usage: vector_demo.py [KERNELS.ptx] [N]")
    main(ptx, int(args[0]) if args else 65536)

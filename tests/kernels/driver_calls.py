"""Every driver call the guest client forwards, on random data, with results a test can compare.

    python driver_calls.py native|forwarded [SEED]     -> one JSON object on stdout

`native` runs on NVIDIA's cuda.bindings.driver, `forwarded` on kvmgpu_guest.driver (KVMGPU_SOCKET
and KVMGPU_SHM name the worker). The GPU tests run both and compare; the sim tests run `forwarded`
against a sim worker and compare with results computed here. Only numbers that must be the same on
both sides go in the output: computed buffers, error names, flags; not pointers or device names.
No numpy: the guest image has none.
"""

import array
import ctypes
import hashlib
import json
import random
import sys
from pathlib import Path

PTX = Path(__file__).with_name("kernels.ptx").read_bytes()
N = 4099  # not a multiple of the block: the kernels' bounds checks matter
BLOCK = 128


def load_driver(which: str):
    if which == "native":
        from cuda.bindings import driver
    else:
        from kvmgpu_guest import driver
    return driver


def run(cu, seed: int) -> dict:
    out: dict = {}

    def ok(result, what):
        err = result[0]
        if int(err) != 0:
            raise SystemExit(json.dumps({"failed": what, "error": cu.cuGetErrorName(err)[1].decode()}))
        return result[1] if len(result) == 2 else result[1:]

    def name(err):
        return cu.cuGetErrorName(err)[1].decode()

    rng = random.Random(seed)
    nbytes = 4 * N
    a = array.array("f", (rng.uniform(-100, 100) for _ in range(N)))
    b = array.array("f", (rng.uniform(-100, 100) for _ in range(N)))

    def fetch(dptr, n=N, typecode="f"):
        buf = array.array(typecode, bytes(4 * n))
        ok(cu.cuMemcpyDtoH(buf, dptr, 4 * n), "cuMemcpyDtoH")
        return buf

    def digest(buf):
        return hashlib.sha256(bytes(buf)).hexdigest()

    ok(cu.cuInit(0), "cuInit")
    out["driver_version_ok"] = ok(cu.cuDriverGetVersion(), "cuDriverGetVersion") >= 12000
    out["device_count_ge_1"] = ok(cu.cuDeviceGetCount(), "cuDeviceGetCount") >= 1
    dev = ok(cu.cuDeviceGet(0), "cuDeviceGet")
    out["name_nonempty"] = len(ok(cu.cuDeviceGetName(64, dev), "cuDeviceGetName").split(b"\0")[0]) > 0
    out["total_mem_positive"] = ok(cu.cuDeviceTotalMem(dev), "cuDeviceTotalMem") > 0
    out["warp_size"] = ok(cu.cuDeviceGetAttribute(cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_WARP_SIZE, dev),
                          "cuDeviceGetAttribute")
    primary = ok(cu.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    ok(cu.cuCtxSetCurrent(primary), "cuCtxSetCurrent")
    out["current_is_primary"] = int(ok(cu.cuCtxGetCurrent(), "cuCtxGetCurrent")) == int(primary)
    free, total = ok(cu.cuMemGetInfo(), "cuMemGetInfo")
    out["free_le_total"] = 0 < free <= total

    # modules: LoadData and LoadDataEx, functions, a global
    mod = ok(cu.cuModuleLoadData(PTX), "cuModuleLoadData")
    mod2 = ok(cu.cuModuleLoadDataEx(PTX, 0, [], []), "cuModuleLoadDataEx")
    vector_add = ok(cu.cuModuleGetFunction(mod, b"vector_add"), "cuModuleGetFunction")
    saxpy = ok(cu.cuModuleGetFunction(mod2, b"saxpy"), "cuModuleGetFunction")
    stencil = ok(cu.cuModuleGetFunction(mod, b"stencil1d"), "cuModuleGetFunction")
    scale_by_global = ok(cu.cuModuleGetFunction(mod, b"scale_by_global"), "cuModuleGetFunction")
    out["missing_function"] = name(cu.cuModuleGetFunction(mod, b"no_such_kernel")[0])
    g_ptr, g_size = ok(cu.cuModuleGetGlobal(mod, b"scale"), "cuModuleGetGlobal")
    out["global_size"] = g_size

    da, db, dc = (ok(cu.cuMemAlloc(nbytes), "cuMemAlloc") for _ in range(3))
    ok(cu.cuMemcpyHtoD(da, a, nbytes), "cuMemcpyHtoD")
    ok(cu.cuMemcpyHtoD(db, b, nbytes), "cuMemcpyHtoD")
    grid = (N + BLOCK - 1) // BLOCK

    # launch forms: (values, types) tuple
    ok(cu.cuLaunchKernel(vector_add, grid, 1, 1, BLOCK, 1, 1, 0, 0,
                         ((da, db, dc, N), (None, None, None, ctypes.c_int)), 0), "cuLaunchKernel tuple")
    out["vector_add"] = digest(fetch(dc))
    # a void*[] address, as cuda-python's samples build it
    alpha = ctypes.c_float(2.5)
    x_arg, y_arg, n_arg = ctypes.c_void_p(int(da)), ctypes.c_void_p(int(dc)), ctypes.c_int(N)
    params = (ctypes.c_void_p * 4)(*(ctypes.addressof(v) for v in (alpha, x_arg, y_arg, n_arg)))
    ok(cu.cuLaunchKernel(saxpy, grid, 1, 1, BLOCK, 1, 1, 0, 0, ctypes.addressof(params), 0),
       "cuLaunchKernel void**")
    out["saxpy"] = digest(fetch(dc))

    # the global: write it, use it, read it back
    scale = array.array("f", [0.5])
    ok(cu.cuMemcpyHtoD(g_ptr, scale, 4), "cuMemcpyHtoD global")
    ok(cu.cuLaunchKernel(scale_by_global, grid, 1, 1, BLOCK, 1, 1, 0, 0,
                         ((dc, N), (None, ctypes.c_int)), 0), "cuLaunchKernel global")
    out["scaled"] = digest(fetch(dc))
    back = array.array("f", [0.0])
    ok(cu.cuMemcpyDtoH(back, g_ptr, 4), "cuMemcpyDtoH global")
    out["global_back"] = back[0]

    # device-to-device, memsets (sync and async), a stream, events
    ok(cu.cuMemcpyDtoD(db, dc, nbytes), "cuMemcpyDtoD")
    out["dtod"] = digest(fetch(db))
    stream = ok(cu.cuStreamCreate(0), "cuStreamCreate")
    start, end = (ok(cu.cuEventCreate(0), "cuEventCreate") for _ in range(2))
    ok(cu.cuEventRecord(start, stream), "cuEventRecord")
    ok(cu.cuMemsetD32Async(da, 0x3F800000, N, stream), "cuMemsetD32Async")  # 1.0f
    ok(cu.cuMemsetD8Async(db, 0x40, nbytes // 2, stream), "cuMemsetD8Async")
    ok(cu.cuMemcpyHtoDAsync(dc, b, nbytes, stream), "cuMemcpyHtoDAsync")
    ok(cu.cuMemcpyDtoDAsync(dc, dc, 0, stream), "cuMemcpyDtoDAsync (0 bytes)")
    ok(cu.cuLaunchKernel(stencil, grid, 1, 1, BLOCK, 1, 1, 0, stream, ((dc, da, N), (None, None, ctypes.c_int)), 0),
       "cuLaunchKernel stream")
    ok(cu.cuEventRecord(end, stream), "cuEventRecord")
    ok(cu.cuStreamSynchronize(stream), "cuStreamSynchronize")
    out["stream_query"] = name(cu.cuStreamQuery(stream)[0])
    ok(cu.cuEventSynchronize(end), "cuEventSynchronize")
    out["event_query"] = name(cu.cuEventQuery(end)[0])
    out["elapsed_nonneg"] = ok(cu.cuEventElapsedTime(start, end), "cuEventElapsedTime") >= 0.0
    out["stencil_on_stream"] = digest(fetch(da))
    out["memset_d8"] = digest(fetch(db, N, "f"))
    host = array.array("f", bytes(nbytes))
    ok(cu.cuMemcpyDtoHAsync(host, dc, nbytes, stream), "cuMemcpyDtoHAsync")
    ok(cu.cuStreamSynchronize(stream), "cuStreamSynchronize")
    out["dtoh_async"] = digest(host)
    ok(cu.cuMemsetD8(dc, 0, nbytes), "cuMemsetD8")
    ok(cu.cuMemsetD32(dc, 7, N), "cuMemsetD32")
    out["memset_d32"] = digest(fetch(dc, N, "I"))

    # errors: what a program sees for a bad free and a huge allocation
    out["free_bad_pointer"] = name(cu.cuMemFree(int(da) + 4)[0])
    out["alloc_past_total"] = name(cu.cuMemAlloc(total + (1 << 30))[0])
    out["error_string"] = cu.cuGetErrorString(cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY)[1].decode()

    for obj, call in ((start, cu.cuEventDestroy), (end, cu.cuEventDestroy), (stream, cu.cuStreamDestroy),
                      (da, cu.cuMemFree), (db, cu.cuMemFree), (dc, cu.cuMemFree),
                      (mod, cu.cuModuleUnload), (mod2, cu.cuModuleUnload)):
        ok(call(obj), call.__name__)
    ok(cu.cuCtxSynchronize(), "cuCtxSynchronize")
    ok(cu.cuDevicePrimaryCtxRelease(dev), "cuDevicePrimaryCtxRelease")
    try:  # cuda-bindings 13's form, then 12's
        ctx = ok(cu.cuCtxCreate(None, 0, dev), "cuCtxCreate")
    except TypeError:
        ctx = ok(cu.cuCtxCreate(0, dev), "cuCtxCreate")
    ok(cu.cuCtxDestroy(ctx), "cuCtxDestroy")
    return out


def expected_on_sim(seed: int) -> dict:
    """The buffers `run` computes, as the sim backend computes them (in doubles, rounded to float32
    once per element). A GPU contracts and rounds differently, so GPU runs are compared with
    native runs instead."""
    rng = random.Random(seed)
    a = array.array("f", (rng.uniform(-100, 100) for _ in range(N)))
    b = array.array("f", (rng.uniform(-100, 100) for _ in range(N)))

    def digest(buf):
        return hashlib.sha256(bytes(buf)).hexdigest()
    c = array.array("f", (x + y for x, y in zip(a, b)))
    out = {"vector_add": digest(c)}
    c = array.array("f", (2.5 * x + y for x, y in zip(a, c)))
    out["saxpy"] = digest(c)
    c = array.array("f", (x * 0.5 for x in c))
    out["scaled"] = out["dtod"] = digest(c)
    third = 1.0 / 3.0
    out["stencil_on_stream"] = digest(array.array("f", (
        b[i] if i in (0, N - 1) else (b[i - 1] + b[i] + b[i + 1]) * third for i in range(N))))
    d8 = bytearray(bytes(c))
    d8[: 2 * N] = b"\x40" * (2 * N)
    out["memset_d8"] = digest(d8)
    out["dtoh_async"] = digest(b)
    out["memset_d32"] = digest(array.array("I", [7] * N))
    return out


if __name__ == "__main__":
    which = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(json.dumps(run(load_driver(which), seed), sort_keys=True))

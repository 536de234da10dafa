"""A guest program for the GPU tests, run as its own process against one VM's loopback worker
(KVMGPU_SOCKET / KVMGPU_SHM): `guest_task.py spin NS SECONDS START | stencil N ITERS [SECONDS] | oob`.
Prints one JSON line."""

import ctypes
import json
import sys
import time
from pathlib import Path

import numpy as np

from kvmgpu_guest import driver as cu

PTX = Path(__file__).resolve().parents[1] / "kernels" / "kernels.ptx"
P, I32, I64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong


def ok(result):
    if result[0]:
        raise SystemExit(json.dumps({"error": int(result[0])}))
    return result[1] if len(result) == 2 else result[1:]


def setup():
    ok(cu.cuInit(0))
    dev = ok(cu.cuDeviceGet(0))
    ok(cu.cuCtxCreate(0, dev))
    mod = ok(cu.cuModuleLoadData(PTX.read_bytes()))
    return mod


def spin(ns: int, seconds: float, start: float) -> dict:
    mod = setup()
    f = ok(cu.cuModuleGetFunction(mod, b"spin"))
    args = ((ns,), (I64,))
    while time.monotonic() < start:
        time.sleep(0.001)
    marks = []  # (time the batch was seen complete, kernels completed in it)
    while time.monotonic() < start + seconds:
        for _ in range(4):
            ok(cu.cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, 0, args, 0))
        ok(cu.cuCtxSynchronize())
        marks.append((time.monotonic(), 4))
    return {"marks": marks}


def stencil(n: int, iters: int, seconds: float = 0.0) -> dict:
    """ITERS stencil steps on N floats, checked against numpy; with SECONDS, rounds of it again and
    again for that long (all must be right)."""
    mod = setup()
    f = ok(cu.cuModuleGetFunction(mod, b"stencil1d"))
    end = time.monotonic() + seconds
    rounds, good = 0, True
    while True:
        good = _stencil_round(f, n, iters, rounds) and good
        rounds += 1
        if time.monotonic() >= end:
            return {"ok": good, "rounds": rounds, "end": time.monotonic()}


def _stencil_round(f, n: int, iters: int, seed: int) -> bool:
    x = np.random.default_rng(seed).random(n, dtype=np.float32)
    a, b = int(ok(cu.cuMemAlloc(4 * n))), int(ok(cu.cuMemAlloc(4 * n)))
    ok(cu.cuMemcpyHtoD(a, x, 4 * n))
    for _ in range(iters):
        ok(cu.cuLaunchKernel(f, (n + 255) // 256, 1, 1, 256, 1, 1, 0, 0, ((a, b, n), (P, P, I32)), 0))
        a, b = b, a
    y = np.empty_like(x)
    ok(cu.cuMemcpyDtoH(y, a, 4 * n))
    ok(cu.cuMemFree(a))
    ok(cu.cuMemFree(b))
    ref = x.copy()
    for _ in range(iters):
        nxt = ref.copy()
        nxt[1:-1] = (ref[:-2] + ref[1:-1] + ref[2:]) * np.float32(1.0 / 3.0)
        ref = nxt
    return bool(np.allclose(y, ref, rtol=1e-4, atol=1e-5))


def oob() -> dict:
    mod = setup()
    f = ok(cu.cuModuleGetFunction(mod, b"write_oob"))
    p = int(ok(cu.cuMemAlloc(4)))
    cu.cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, 0, ((p, 1 << 40), (P, I64)), 0)
    err, = cu.cuCtxSynchronize()
    return {"sync": int(err), "end": time.monotonic()}


if __name__ == "__main__":
    task, rest = sys.argv[1], sys.argv[2:]
    if task == "spin":
        out = spin(int(rest[0]), float(rest[1]), float(rest[2]))
    elif task == "stencil":
        out = stencil(int(rest[0]), int(rest[1]), float(rest[2]) if len(rest) > 2 else 0.0)
    else:
        out = oob()
    print(json.dumps(out))
